r"""Embeds a dataset with any zoo model: TensorBoard projector files, a 2-D map, transfer scores.

    python -m experiments.embed --preset=vit_tiny_digits --dataset=digits:test --output=/tmp/emb
    python -m experiments.embed --model_dir=/tmp/runs/vit --dataset=digits:test --output=/tmp/emb \
        --labels_per_class=10,50,all --seeds=5
    tensorboard --logdir /tmp/emb          # the Projector tab shows the points

The model gives its embedding through its family's hook
(``ZooModel.embedding_model``; ``--kind`` picks another one the family
offers, e.g. ``mean`` for a ViT). Written to ``--output`` (a local folder):

    embeddings.npy, labels.npy      (N, D) float32 and (N,) int64, in dataset order
    tensors.tsv, metadata.tsv       the projector's points and their labels
    sprite.png                      one tile per point, row-major from the top left
    projector_config.pbtxt          ties them together for TensorBoard
    map.png                         PCA and t-SNE of the embeddings, coloured by label
    scores.json                     the transfer table printed at the end

Transfer scores: k-NN (k = 20, cosine, DINO's weighting) and a linear probe
(``keras_zoo.evaluation``) trained on the train split of the same source
(``--train_dataset``) and tested on the embedded points, for the embeddings,
the raw model inputs, and PCA of the raw inputs with the embedding's
dimension (fitted on the training inputs, no labels). ``--labels_per_class``
repeats them with a few labels per class (the rest of the training set
unlabelled), averaged over ``--seeds`` random draws.

Sprite cap: TensorBoard's projector loads sprite images up to 8192 x 8192 px,
so at most (8192 // tile)**2 points get thumbnails (65,536 at the default
32 px tile); more is an error naming the ways out (``--num_points``, a smaller
``--sprite_tile``, ``--nosprite``). t-SNE needs scikit-learn (the ``embed``
extra: ``pip install keras-zoo[embed]``); it is imported only when the map
asks for it (``--map=pca`` does without).
"""

import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from absl import app, flags, logging

SPRITE_MAX_SIDE = 8192  # px: the largest sprite TensorBoard's projector loads
MAPS = ("pca_tsne", "pca", "none")
BASELINES = ("raw", "pca")


class EmbedError(ValueError):
    """A setting of the embedding tool that cannot work; the message says why."""


# ---------------------------------------------------------------- inputs

def check_output(path):
    if not path:
        raise EmbedError("--output is required: the folder the embeddings, projector "
                         "files and map go to")
    if os.path.exists(path) and not os.path.isdir(path):
        raise EmbedError(f"--output={path!r} is a file; give a folder (it is created "
                         "if missing)")


def is_image_input(shape, dtype):
    return (len(shape) == 4 and shape[1] == shape[2] and shape[1] is not None
            and shape[3] in (1, 3) and str(dtype).startswith("float"))


def default_train_dataset(spec):
    """The train split of ``spec``'s source; None when ``spec`` is itself a
    training split, a synthetic set or a file (no held-out pair to score)."""
    from keras_zoo.data import datasets

    if spec.endswith(".npz"):
        return None
    kind, name, split = datasets.parse_spec(spec, "test")
    if kind == "synthetic" or split.startswith("train"):
        return None
    return f"tfds:{name}:train" if kind == "tfds" else f"{name}:train"


def load_points(model, spec, input_shape, input_dtype, limit=None, data_dir=None,
                default_split="test"):
    """(inputs (N, ...) as the model takes them, int64 labels (N,) or None).

    ``spec``: a dataset spec, loaded by the family's own ``load_data`` hook
    (images: resized and converted to the model's size and channels, in
    dataset order), or an ``.npz`` file with ``x`` (inputs of exactly the
    model's shape) and optionally ``y`` (labels)."""
    from keras_zoo.data import datasets

    expected = tuple(input_shape[1:])
    if spec.endswith(".npz"):
        if not os.path.isfile(spec):
            raise EmbedError(f"dataset file {spec!r} does not exist")
        with np.load(spec) as f:
            if "x" not in f:
                raise EmbedError(f"{spec!r} has no array 'x' (found {sorted(f.files)}); "
                                 "write np.savez(path, x=inputs, y=labels)")
            x = f["x"][:limit]
            y = f["y"][:limit] if "y" in f else None
        if tuple(x.shape[1:]) != expected:
            raise EmbedError(f"dataset {spec!r} holds inputs of shape {tuple(x.shape)}; the "
                             f"model takes (N, {', '.join(map(str, expected))})")
        if y is not None and y.shape != (len(x),):
            raise EmbedError(f"dataset {spec!r}: y has shape {y.shape}, expected ({len(x)},)")
        return x.astype(input_dtype), None if y is None else y.astype("int64")
    if not is_image_input(input_shape, input_dtype):
        raise EmbedError(
            f"{type(model).__name__}'s embedding takes inputs of shape (N, "
            f"{', '.join(map(str, expected))}) {input_dtype}, not images; pass an .npz file "
            "with x of that shape")
    ds, _ = model.load_data(spec, default_split, data_dir=data_dir)  # the family's errors
    if limit is not None:
        ds = ds.take(limit)
    size, channels = expected[0], expected[2]
    xs, ys = [], []
    for x, y in ds.map(lambda x, y: (datasets.to_model_input(x, size, channels), y)).batch(512):
        xs.append(x.numpy())
        ys.append(y.numpy())
    if not xs:
        raise EmbedError(f"dataset {spec!r} yielded no images")
    return np.concatenate(xs), np.concatenate(ys).astype("int64")


# ---------------------------------------------------------------- projector files

def sprite_capacity(tile):
    return (SPRITE_MAX_SIDE // tile) ** 2


def check_sprite(num_points, tile):
    if tile < 1:
        raise EmbedError(f"--sprite_tile must be a positive number of pixels, got {tile}")
    cap = sprite_capacity(tile)
    if num_points > cap:
        side = math.ceil(math.sqrt(num_points)) * tile
        raise EmbedError(
            f"{num_points:,} points need a {side:,} x {side:,} px sprite of {tile} px tiles, "
            f"but TensorBoard's projector loads sprites up to {SPRITE_MAX_SIDE} x "
            f"{SPRITE_MAX_SIDE} px ({cap:,} points at this tile size); pass "
            f"--num_points<={cap}, a smaller --sprite_tile, or --nosprite")


def sprite_image(images, tile):
    """(N, H, W, C) floats in [0, 1] -> one uint8 (S * tile, S * tile, C) image,
    S = ceil(sqrt(N)): point i is the tile in row i // S, column i % S."""
    import tensorflow as tf

    check_sprite(len(images), tile)
    if images.shape[1:3] != (tile, tile):
        images = tf.image.resize(images, (tile, tile), method="area").numpy()
    tiles = np.clip(np.round(images * 255.0), 0, 255).astype("uint8")
    per_side = math.ceil(math.sqrt(len(tiles)))
    canvas = np.zeros((per_side * tile, per_side * tile, tiles.shape[-1]), "uint8")
    for i, t in enumerate(tiles):
        row, col = divmod(i, per_side)
        canvas[row * tile:(row + 1) * tile, col * tile:(col + 1) * tile] = t
    return canvas


def write_projector(output, name, embeddings, labels, images=None, tile=None):
    """tensors.tsv, metadata.tsv (labels), sprite.png (images) and
    projector_config.pbtxt in ``output``; returns the written file names."""
    import tensorflow as tf
    from tensorboard.plugins import projector

    np.savetxt(os.path.join(output, "tensors.tsv"), embeddings, delimiter="\t", fmt="%.7g")
    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = name
    embedding.tensor_path = "tensors.tsv"
    files = ["tensors.tsv"]
    if labels is not None:
        # One column, so no header line (the projector's rule for metadata files).
        with open(os.path.join(output, "metadata.tsv"), "w") as f:
            f.writelines(f"{int(label)}\n" for label in labels)
        embedding.metadata_path = "metadata.tsv"
        files.append("metadata.tsv")
    if images is not None:
        with open(os.path.join(output, "sprite.png"), "wb") as f:
            f.write(tf.io.encode_png(sprite_image(images, tile)).numpy())
        embedding.sprite.image_path = "sprite.png"
        embedding.sprite.single_image_dim.extend([tile, tile])
        files.append("sprite.png")
    projector.visualize_embeddings(output, config)
    return files + ["projector_config.pbtxt"]


# ---------------------------------------------------------------- map

def _tsne(points, seed):
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise EmbedError("the t-SNE map needs scikit-learn: pip install 'keras-zoo[embed]' "
                         "(or scikit-learn), or pass --map=pca") from None
    perplexity = min(30.0, (len(points) - 1) / 3.0)
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)


def write_map(path, embeddings, labels, title, kind="pca_tsne", max_points=2000, seed=0):
    """A PNG of the embeddings in 2-D: PCA (and t-SNE), coloured by label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_zoo import evaluation

    keep = np.arange(len(embeddings))
    if len(keep) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(keep), max_points, replace=False))
    points = embeddings[keep]
    panels = [("PCA", evaluation.pca(points, 2)(points))]
    if kind == "pca_tsne":
        panels.append(("t-SNE", _tsne(points, seed)))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False)
    classes = np.unique(labels) if labels is not None else [None]
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for ax, (name, xy) in zip(axes[0], panels):
        for i, c in enumerate(classes):
            mask = np.ones(len(keep), bool) if c is None else labels[keep] == c
            ax.scatter(xy[mask, 0], xy[mask, 1], s=6, alpha=0.8, color=cmap(i % cmap.N),
                       label=None if c is None else str(c), linewidths=0)
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    if labels is not None and len(classes) <= 20:
        axes[0][-1].legend(title="label", fontsize=7, title_fontsize=8, markerscale=2,
                           loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle(f"{title} ({len(keep):,} points)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


# ---------------------------------------------------------------- scores

def score_table(scores, settings):
    """The printed table: one row per feature set, k-NN and probe per setting."""
    def cell(values):
        values = np.asarray(values) * 100
        return f"{values.mean():5.1f}" + (f" ±{values.std():4.1f}" if len(values) > 1 else "")

    width = max(len(name) for name in scores) + 2
    head = f"{'features':<{width}}{'dim':>6}" + "".join(
        f"{'k-NN ' + s:>16}{'probe ' + s:>16}" for s in settings)
    lines = [head, "-" * len(head)]
    for name, row in scores.items():
        lines.append(f"{name:<{width}}{row['dim']:>6}" + "".join(
            f"{cell(row['settings'][s]['knn']):>16}{cell(row['settings'][s]['probe']):>16}"
            for s in settings))
    return "\n".join(lines)


def parse_labels_per_class(values):
    out = []
    for v in values:
        if str(v) == "all":
            out.append(None)
            continue
        try:
            n = int(v)
        except ValueError:
            n = 0
        if n < 1:
            raise EmbedError(f"--labels_per_class takes positive counts or 'all', got {v!r}")
        out.append(n)
    return out or [None]


# ---------------------------------------------------------------- the tool

def embed(preset=None, model_dir=None, model=None, dataset="digits:test", output=None,
          kind=None, num_points=None, batch_size=256, train_dataset="auto", train_points=None,
          labels_per_class=("all",), seeds=1, probe_epochs=100, k=20, sprite=True,
          sprite_tile=None, map="pca_tsne", map_points=2000, data_dir=None, seed=0,
          baselines=BASELINES, progress=True):
    """Runs the tool (the flags' values as arguments); returns a summary dict.

    ``model``: a built ZooModel instead of ``preset`` / ``model_dir``."""
    from export.export import load_model
    from keras_zoo import evaluation

    check_output(output)
    if map not in MAPS:
        raise EmbedError(f"--map must be one of {', '.join(MAPS)}, got {map!r}")
    for what, value in (("num_points", num_points), ("train_points", train_points),
                        ("sprite_tile", sprite_tile), ("batch_size", batch_size), ("k", k),
                        ("probe_epochs", probe_epochs), ("map_points", map_points)):
        # checked before any work; sprite_tile=0 is not "the default"
        if value is not None and value < 1:
            raise EmbedError(f"--{what} must be a positive integer, got {value}")
    if seeds < 1:
        raise EmbedError(f"--seeds must be >= 1, got {seeds}")
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        raise EmbedError(f"--baselines takes {', '.join(BASELINES)}; got {unknown}")
    settings = parse_labels_per_class(labels_per_class)
    started = time.time()
    if model is None:
        model = load_model(preset, model_dir)
    source = preset or model_dir or model.name
    family = type(model).__name__
    kinds = model.embedding_kinds() if hasattr(model, "embedding_kinds") else ()
    if kinds and kind is not None and kind not in kinds:
        raise EmbedError(f"{family} has no embedding kind {kind!r}; its kinds: "
                         f"{', '.join(kinds)}")
    embedder = model.embedding_model(kind)  # EmbeddingError when the family has no hook
    kind = kind or kinds[0]
    tensor = embedder.inputs[0]
    shape, dtype = tuple(tensor.shape), str(tensor.dtype)
    tile = sprite_tile or min(shape[1] or 32, 32)
    if sprite and is_image_input(shape, dtype) and num_points is not None:
        check_sprite(num_points, tile)  # before any work when the count is known

    x, y = load_points(model, dataset, shape, dtype, num_points, data_dir)
    with_sprite = sprite and is_image_input(shape, dtype)
    if with_sprite:
        check_sprite(len(x), tile)
    print(f"{family} {source!s}: {kind} embedding, {len(x):,} points of {dataset}")
    z = evaluation.extract_features(embedder, x, batch_size, progress=progress)
    os.makedirs(output, exist_ok=True)
    np.save(os.path.join(output, "embeddings.npy"), z)
    if y is not None:
        np.save(os.path.join(output, "labels.npy"), y)
    title = f"{family} {os.path.basename(str(source).rstrip('/'))} ({kind}, {z.shape[1]}-d)"
    files = write_projector(output, f"{title} on {dataset}", z, y,
                            x if with_sprite else None, tile)
    summary = {"model": str(source), "family": family, "kind": kind, "dataset": dataset,
               "num_points": len(z), "dim": int(z.shape[1]),
               "files": ["embeddings.npy"] + (["labels.npy"] if y is not None else []) + files}
    if map != "none":
        write_map(os.path.join(output, "map.png"), z, y, f"{title} on {dataset}", map,
                  map_points, seed)
        summary["files"].append("map.png")

    if train_dataset == "auto":
        train_dataset = default_train_dataset(dataset)
    if train_dataset in (None, "", "none") or y is None:
        print("transfer scores skipped: " + ("the points have no labels" if y is None else
              f"no training split to pair with {dataset!r} (pass --train_dataset)"))
    else:
        x_train, y_train = load_points(model, train_dataset, shape, dtype, train_points,
                                       data_dir, default_split="train")
        print(f"training points: {len(x_train):,} of {train_dataset}")
        z_train = evaluation.extract_features(embedder, x_train, batch_size, progress=progress)
        raw_train, raw = x_train.reshape(len(x_train), -1), x.reshape(len(x), -1)
        features = {f"{family} {kind}": (z_train, z)}
        if "raw" in baselines:
            features["raw inputs"] = (raw_train.astype("float32"), raw.astype("float32"))
        if "pca" in baselines:  # unsupervised, like the autoencoders: all training inputs
            project = evaluation.pca(raw_train, z.shape[1])
            pca_train = project(raw_train)
            features[f"PCA-{pca_train.shape[1]} of raw inputs"] = (pca_train, project(raw))
        scores = {}
        for name, (train_f, test_f) in features.items():
            per_setting = evaluation.transfer_scores(
                train_f, y_train, test_f, y, settings, seeds=seeds, k=k,
                probe_epochs=probe_epochs)
            scores[name] = {"dim": int(train_f.shape[1]), "settings": per_setting}
        names = list(next(iter(scores.values()))["settings"])
        print(f"\ntransfer: train {train_dataset} ({len(x_train):,}), test {dataset} "
              f"({len(x):,}); k-NN k={k} cosine T=0.07; linear probe {probe_epochs} epochs; "
              f"top-1 %" + (f", mean ±std over {seeds} label draws" if seeds > 1 else ""))
        print(score_table(scores, names))
        summary.update(train_dataset=train_dataset, train_points=len(x_train),
                       scores=scores, k=k, probe_epochs=probe_epochs, seeds=seeds)
        with open(os.path.join(output, "scores.json"), "w") as f:
            json.dump(summary, f, indent=2)
        summary["files"].append("scores.json")
    summary["wall_seconds"] = round(time.time() - started, 1)
    print(f"wrote {', '.join(summary['files'])} to {output} ({summary['wall_seconds']} s); "
          f"view: tensorboard --logdir {output}")
    return summary


# ---------------------------------------------------------------- command line

_FLAG_ARGUMENTS = ("preset", "model_dir", "dataset", "output", "kind", "num_points",
                   "batch_size", "train_dataset", "train_points", "labels_per_class", "seeds",
                   "probe_epochs", "k", "sprite", "sprite_tile", "map", "map_points",
                   "data_dir", "seed", "baselines")


def _define_flags():
    """Defined on demand, not at import: experiments.train owns flags of the
    same names (--preset, --dataset, ...) in the same absl registry."""
    flags.DEFINE_string("preset", None, "Registry name or preset folder.")
    flags.DEFINE_string("model_dir", None, "A training run (uses best/, else last/).")
    flags.DEFINE_string("dataset", "digits:test", "Points to embed: digits[:SPLIT], "
                        "tfds:NAME[:SPLIT], synthetic:N, or an .npz file with x (and y).")
    flags.DEFINE_string("output", None, "Folder for embeddings, projector files, map, scores.")
    flags.DEFINE_string("kind", None, "Embedding kind (default: the family's first; e.g. "
                        "cls|mean for ViT/MAE/DINO).")
    flags.DEFINE_integer("num_points", None, "Embed only the first N points of --dataset.")
    flags.DEFINE_integer("batch_size", 256, "Inputs per forward pass.")
    flags.DEFINE_string("train_dataset", "auto", "Labelled training points for the transfer "
                        "scores; auto: the train split of --dataset's source; none: skip scores.")
    flags.DEFINE_integer("train_points", None, "Use only the first N training points.")
    flags.DEFINE_list("labels_per_class", ["all"], "Label budgets of the transfer scores, "
                      "e.g. 10,50,all.")
    flags.DEFINE_integer("seeds", 1, "Random labelled subsets per budget (mean ±std).")
    flags.DEFINE_integer("probe_epochs", 100, "Epochs of each linear probe.")
    flags.DEFINE_integer("k", 20, "Neighbours of the k-NN classifier.")
    flags.DEFINE_boolean("sprite", True, "Write a sprite of the input images (image inputs).")
    flags.DEFINE_integer("sprite_tile", None, "Sprite tile side in px (default: the image "
                         "size, at most 32); the projector holds (8192 // tile)**2 tiles.")
    flags.DEFINE_enum("map", "pca_tsne", list(MAPS), "The 2-D map PNG (t-SNE needs "
                      "scikit-learn).")
    flags.DEFINE_integer("map_points", 2000, "Points drawn in the map (a random subset beyond).")
    flags.DEFINE_string("data_dir", None, "tfds data directory.")
    flags.DEFINE_integer("seed", 0, "Seed of the map's subset and t-SNE.")
    flags.DEFINE_list("baselines", list(BASELINES), "Scored next to the embedding: raw "
                      "inputs, PCA of them with the embedding's dimension (empty: none).")


def user_errors():
    from export.tflite import ExportError
    from keras_zoo.data import DatasetError
    from keras_zoo.models.base import EmbeddingError
    from keras_zoo.presets import PresetError

    return (EmbedError, EmbeddingError, ExportError, PresetError, DatasetError)


def main(argv):
    FLAGS = flags.FLAGS
    logging.set_verbosity(logging.WARNING)
    try:
        if len(argv) > 1:
            raise EmbedError(f"unexpected arguments {argv[1:]}; flags are written --name=value")
        embed(**{name: getattr(FLAGS, name) for name in _FLAG_ARGUMENTS})
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


def run():
    """Console script ``keras-zoo-embed``."""
    _define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
