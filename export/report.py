"""Exports every tiny registry preset in every mode; writes a Markdown table and a PNG chart.

    python -m export.report                      # -> export/results/report.{md,png,json}
    python -m export.report --train_epochs=10 --presets=lenet5,vit_tiny_digits
    python -m export.report --from_json=export/results/report.json   # redraw only

Modes: SavedModel, and TFLite float32 / float16 / dynamic int8 / full int8
(static batch 1; one file per signature, summed per row: a VAE's row is its
encoder plus its decoder). Per mode: size (and ratio to TFLite float32), LiteRT
latency (single thread, median and p90), parity with Keras (max abs diff
relative to output scale, top-1 agreement for classifiers on digits:test),
ops (builtins only, or the flex ops), and whether XNNPACK runs the whole
graph (else which ops it leaves out). Families added to the registry later
appear automatically (``keras_zoo.list_presets(tiny=True)``).

Weights: with ``--train_epochs=0`` every preset gets fixed random weights
(parity is then a statement about arithmetic, and classifier agreement is
low because random logits are near ties); ``--train_epochs=N`` first trains
the classifiers (models whose ``compile_defaults()`` has a loss) on digits.
"""

import json
import os
import shutil
import tempfile
import time

import numpy as np

MODES = [("saved_model", "none"), ("tflite", "none"), ("tflite", "float16"),
         ("tflite", "dynamic_int8"), ("tflite", "int8")]
RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results")


def randomise_weights(model, seed=0, scale=0.1):
    """Adds fixed Gaussian noise to every float weight (a zero-initialised
    head would make every output 0 and every parity check pass); variances
    (BatchNorm) stay positive. Returns the model."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        w = np.asarray(variable)
        if w.dtype.kind != "f":
            continue
        w = w + rng.normal(0, scale, w.shape).astype(w.dtype)
        if "variance" in variable.path:
            w = np.abs(w) + 0.5
        variable.assign(w)
    return model


# Digit classifiers trained by the tests and benchmarks/export_latency.py:
# preset -> (epochs, Adam learning rate). Tens of seconds each on one core;
# test accuracy ~97 % (LeNet, ResNet) and ~93 % (ViT).
DIGIT_RECIPES = {
    "lenet5": (8, 3e-3),
    "resnet_tiny_digits": (2, 3e-3),
    "vit_tiny_digits": (12, 2e-3),
}


def train_classifier(model, epochs, learning_rate=2e-3, batch_size=32, seed=0):
    """Fits a classifier on digits:train (no-op for models without a plain
    loss); returns whether it trained."""
    import keras

    from keras_zoo.data import datasets

    defaults = model.compile_defaults() if hasattr(model, "compile_defaults") else {}
    if not epochs or defaults.get("loss") is None:
        return False
    shape = model.inputs[0].shape
    x, y, _ = datasets.load_arrays("digits", "train", shape[1], shape[3])
    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), jit_compile=True,
                  **defaults)
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
    return True


def measure(preset, work, train_epochs=0, runs=100, calibration_samples=100,
            verify_samples=128):
    """One row per mode for ``preset``."""
    import keras

    import keras_zoo
    from export import export, verify

    keras.utils.set_random_seed(0)  # the same initial weights every run
    model = keras_zoo.from_preset(preset)
    trained = train_classifier(model, train_epochs)
    if not trained:
        randomise_weights(model)
    params = int(sum(np.prod(w.shape) for w in model.weights))
    rows = []
    # One file per signature (a VAE's encoder and decoder apart): LiteRT's
    # node view, and so the XNNPACK check, covers one subgraph per file.
    # Per signature, one traced SavedModel for the float modes; int8 apart,
    # so that a model int8 cannot take still reports its other files.
    results, failures, seconds = {}, {}, {}
    # The family's own signatures: "embedding" (another view of the same weights)
    # would add a file to each row.
    for key in model.serving_signatures():
        for group in (("none", "float16", "dynamic_int8"), ("int8",)):
            paths = {q: os.path.join(work, f"{preset}_{key}_{q}.tflite") for q in group}
            start = time.time()
            try:
                for q, r in export.export_tflite(
                        model, paths, signature=key, representative_data=_calibration(model),
                        calibration_samples=calibration_samples).items():
                    results.setdefault(("tflite", q), []).append(r)
            except Exception as e:  # noqa: BLE001  (a failing export is a result to report)
                failures.update({("tflite", q): f"{key}: {type(e).__name__}: {str(e)[:300]}"
                                 for q in group})
            for q in group:
                seconds[("tflite", q)] = seconds.get(("tflite", q), 0) + (
                    time.time() - start) / len(group)
    for fmt, quantization in MODES:
        row = {"preset": preset, "family": type(model).__name__, "params": params,
               "weights": "trained" if trained else "random", "format": fmt,
               "quantization": quantization}
        try:
            start = time.time()
            if fmt == "saved_model":
                files = [export.export_model(model, os.path.join(work, f"{preset}_sm"),
                                             "saved_model")]
            elif (fmt, quantization) in failures:
                raise RuntimeError(failures[(fmt, quantization)])
            else:
                files = results[(fmt, quantization)]
            row["export_s"] = round(seconds.get((fmt, quantization), time.time() - start), 1)
            row["size_bytes"] = sum(f["size_bytes"] for f in files)
            checks = [c for f in files
                      for c in export.verify_export(model, f, num_samples=verify_samples).values()]
            row["relative_diff"] = max(c["relative_diff"] for c in checks)
            agreements = [c["top1_agreement"] for c in checks if "top1_agreement" in c]
            row["top1_agreement"] = min(agreements) if agreements else None
            if fmt == "tflite":
                b = [verify.benchmark(f["path"], next(iter(f["signatures"])), num_threads=1,
                                      runs=runs) for f in files]
                row["latency_us"] = sum(x["latency_us_median"] for x in b)
                row["latency_us_p90"] = sum(x["latency_us_p90"] for x in b)
                row["flex_ops"] = sorted({o for f in files for o in f["ops"]["flex"]})
                row["fully_delegated"] = all(x["fully_delegated"] for x in b)
                row["undelegated_ops"] = sorted({o for x in b for o in x["undelegated_ops"]})
        except Exception as e:  # noqa: BLE001  (a failing mode is a result to report)
            row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        rows.append(row)
    float32 = next((r.get("size_bytes") for r in rows
                    if r["format"] == "tflite" and r["quantization"] == "none"), None)
    for r in rows:
        if float32 and r.get("size_bytes") and r["format"] == "tflite":
            r["size_ratio"] = r["size_bytes"] / float32
    return rows


def _calibration(model):
    """digits for image inputs; random values when a signature takes anything
    else (a VAE decoder's latent: its real distribution is family knowledge)."""
    from export import export

    specs = export.signature_specs(model, 1)
    images = all(export.is_image(shape, dtype) for _, inputs, _ in specs.values()
                 for _, shape, dtype in inputs)
    return "digits:train" if images else "synthetic"


def markdown(rows):
    head = ("| preset | params | weights | file | size KB | vs f32 | latency us (p90) | "
            "rel. diff | top-1 agree | ops | XNNPACK |")
    lines = [head, "|---|---:|---|---|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        mode = "SavedModel" if r["format"] == "saved_model" else {
            "none": "tflite f32", "float16": "tflite f16", "dynamic_int8": "tflite dyn-int8",
            "int8": "tflite int8"}[r["quantization"]]
        if "error" in r:
            lines.append(f"| {r['preset']} | {r['params']:,} | {r['weights']} | {mode} | "
                         f"failed: {r['error'][:120]} ||||||")
            continue
        latency = (f"{r['latency_us']:.0f} ({r['latency_us_p90']:.0f})"
                   if "latency_us" in r else "")
        ops = ("builtins" if not r.get("flex_ops") else "flex: " + ", ".join(r["flex_ops"])) \
            if r["format"] == "tflite" else ""
        xnn = "" if r["format"] != "tflite" else (
            "whole graph" if r["fully_delegated"] else
            "not: " + ", ".join(sorted(set(r["undelegated_ops"]))))
        agree = "" if r.get("top1_agreement") is None else f"{100 * r['top1_agreement']:.1f} %"
        ratio = f"{r['size_ratio']:.2f}" if "size_ratio" in r else ""
        lines.append(f"| {r['preset']} | {r['params']:,} | {r['weights']} | {mode} | "
                     f"{r['size_bytes'] / 1024:.0f} | {ratio} | {latency} | "
                     f"{r['relative_diff']:.1e} | {agree} | {ops} | {xnn} |")
    return "\n".join(lines) + "\n"


def summary(rows):
    """One line per preset: sizes, latencies, parity of each TFLite mode."""
    by = {(r["preset"], r["format"], r["quantization"]): r for r in rows}
    header = ("| preset | params | weights | f32 KB | int8 / f32 size | latency us f32 / f16 / "
              "dyn / int8 | rel. diff f16 / dyn / int8 | int8 top-1 agree | int8 on XNNPACK |")
    lines = [header, "|---|---:|---|---:|---:|---|---|---:|---|"]
    for preset in sorted({r["preset"] for r in rows}):
        t = {q: by.get((preset, "tflite", q), {}) for q in ("none", "float16", "dynamic_int8",
                                                             "int8")}
        first = by[(preset, "saved_model", "none")]
        if any("size_bytes" not in v for v in t.values()):
            failed = [q for q, v in t.items() if "size_bytes" not in v]
            lines.append(f"| {preset} | {first['params']:,} | {first['weights']} | "
                         f"failed: {', '.join(failed)} ||||||")
            continue
        i8 = t["int8"]
        agree = "" if i8.get("top1_agreement") is None else f"{100 * i8['top1_agreement']:.1f} %"
        xnn = "whole graph" if i8["fully_delegated"] else \
            "not: " + ", ".join(sorted(set(i8["undelegated_ops"])))
        lines.append(
            f"| {preset} | {first['params']:,} | {first['weights']} | "
            f"{t['none']['size_bytes'] / 1024:.0f} | {i8['size_ratio']:.2f} | "
            + " / ".join(f"{v['latency_us']:.0f}" for v in t.values()) + " | "
            + " / ".join(f"{t[q]['relative_diff']:.0e}" for q in ("float16", "dynamic_int8",
                                                                  "int8"))
            + f" | {agree} | {xnn} |")
    return "\n".join(lines) + "\n"


def chart(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    presets = sorted({r["preset"] for r in rows})
    modes = [m for m in MODES if m[0] == "tflite"]
    labels = ["f32", "f16", "dyn-int8", "int8"]
    fig, axes = plt.subplots(3, 1, figsize=(max(8, len(presets) * 0.9), 10), sharex=True)
    width = 0.8 / len(modes)
    for k, (mode, label) in enumerate(zip(modes, labels)):
        pick = {r["preset"]: r for r in rows if (r["format"], r["quantization"]) == mode}
        xs = np.arange(len(presets)) + k * width

        def values(key, pick=pick):
            return [pick.get(p, {}).get(key) or np.nan for p in presets]
        axes[0].bar(xs, np.array(values("size_bytes"), float) / 1024, width, label=label)
        axes[1].bar(xs, values("latency_us"), width, label=label)
        axes[2].bar(xs, np.maximum(np.array(values("relative_diff"), float), 1e-8), width,
                    label=label)
    axes[0].set_ylabel("file size (KB)")
    axes[1].set_ylabel("latency, 1 thread (us)")
    axes[2].set_ylabel("max |tflite - keras| / scale")
    axes[2].set_yscale("log")
    axes[0].set_yscale("log")
    axes[0].legend(ncol=4, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    axes[2].set_xticks(np.arange(len(presets)) + 0.4 - width / 2)
    axes[2].set_xticklabels(presets, rotation=40, ha="right", fontsize=8)
    fig.suptitle("keras_zoo tiny presets: TFLite size, LiteRT latency, parity with Keras")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv):
    del argv
    from absl import flags, logging

    import keras_zoo

    logging.set_verbosity(logging.WARNING)
    FLAGS = flags.FLAGS
    presets = FLAGS.presets or keras_zoo.list_presets(tiny=True)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    rows = []
    if FLAGS.from_json:
        with open(FLAGS.from_json) as f:
            rows = json.load(f)
    work = tempfile.mkdtemp(prefix="keras_zoo_report_")
    try:
        for preset in presets if not FLAGS.from_json else []:
            print(f"{preset} ...", flush=True)
            rows += measure(preset, work, FLAGS.train_epochs, FLAGS.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = os.path.join(FLAGS.output_dir, "report")
    with open(base + ".json", "w") as f:
        json.dump(rows, f, indent=1, default=str)
    with open(base + ".md", "w") as f:
        f.write(summary(rows) + "\n" + markdown(rows))
    chart(rows, base + ".png")
    print(summary(rows))
    print(f"wrote {base}.md, {base}.png, {base}.json")


def run():
    from absl import app, flags

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    flags.DEFINE_list("presets", None, "presets to export (default: every tiny preset)")
    flags.DEFINE_integer("train_epochs", 0, "train classifiers on digits first (0: random "
                         "weights)")
    flags.DEFINE_integer("runs", 100, "timed LiteRT runs per file")
    flags.DEFINE_string("output_dir", RESULTS_DIR, "where report.md/.png/.json go")
    flags.DEFINE_string("from_json", None, "rewrite the table/chart from a saved report.json")
    app.run(main)


if __name__ == "__main__":
    run()
