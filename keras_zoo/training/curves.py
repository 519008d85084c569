"""Training curves: the metrics CSV the trainer appends to, and its PNG plot."""

import csv
import io
import os
import tempfile

from keras_zoo.backend import tf


def read_metrics_csv(path):
    """{column: [values]} from a Keras ``CSVLogger`` file. A run that was killed
    and resumed repeats the epochs after its last checkpoint: the later row
    of an epoch wins, so each epoch appears once, in order."""
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        rows = list(csv.DictReader(io.StringIO(f.read())))
    by_epoch = {}
    for row in rows:
        if row.get("epoch", "") in ("", "epoch"):
            continue  # a header repeated by an appending restart
        by_epoch[int(row["epoch"])] = row
    columns = {}
    for epoch in sorted(by_epoch):
        for key, value in by_epoch[epoch].items():
            try:
                columns.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                columns.setdefault(key, []).append(None)
    if "epoch" in columns:
        columns["epoch"] = [int(e) + 1 for e in columns["epoch"]]  # 1-based, as printed
    return columns


def write_curves(history, path, title=""):
    """One panel per metric (train and ``val_`` together) saved as PNG to ``path``
    (local or gs://). Returns ``path``, or None when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and TPU VMs
    import matplotlib.pyplot as plt

    epochs = history.get("epoch")
    names = [k for k in history if k != "epoch" and not k.startswith("val_")]
    names += [k[4:] for k in history if k.startswith("val_") and k[4:] not in names]
    if not epochs or not names:
        return None
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        for key, style in ((name, "-"), (f"val_{name}", "--")):
            if key in history:
                ax.plot(epochs, history[key], style, marker=".", label=key)
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    local = path
    if "://" in str(path):
        local = os.path.join(tempfile.mkdtemp(prefix="keras_zoo_plot_"), "curves.png")
    fig.savefig(local, dpi=100)
    plt.close(fig)
    if local != path:
        tf.io.gfile.copy(local, path, overwrite=True)
    return path
