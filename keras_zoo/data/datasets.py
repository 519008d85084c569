"""Image datasets by spec string, and the tf.data pipeline every trainer uses.

Specs:
    digits[:train|validation|test]  bundled UCI handwritten digits, 8x8 grey, 10 classes,
                                 no network needed: 1,257 / 180 / 360 images. The file
                                 holds 1,437 training images; validation is 18 per class
                                 drawn from them (stratified, fixed seed: the same split
                                 on every machine), train is the other 1,257
                                 (``digits`` alone means digits:train)
    tfds:NAME[:SPLIT]            any TensorFlow Datasets image classification set
                                 (tfds:mnist, tfds:cifar10, tfds:imagenet2012:validation)
    synthetic[:N]                N random images with random labels (shapes from the
                                 model): dry runs and throughput measurements
"""

import dataclasses
import difflib
import os

import numpy as np

from keras_zoo.backend import tf

BUNDLED_DIR = os.path.join(os.path.dirname(__file__), "bundled")
BUNDLED = {"digits": "digits.npz"}
_BUNDLED_INFO = {"digits": {"num_classes": 10, "image_shape": (8, 8, 1), "max_value": 16.0}}
SPLITS = ("train", "validation", "test")
VALIDATION_PER_CLASS = {"digits": 18}  # carved from the file's training images
VALIDATION_SEED = 0  # part of the split's definition, not a run's --seed


class DatasetError(ValueError):
    """A dataset spec that cannot be loaded; the message says why."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    split: str
    num_classes: int
    image_shape: tuple  # native (H, W, C) before resizing; None dims = variable
    num_examples: int | None
    task = "image"

    @property
    def example_bytes(self):
        """float32 bytes of one image at its native size (unknown dims: 224)."""
        return 4 * int(np.prod([d or 224 for d in self.image_shape or (224, 224, 3)]))


def parse_spec(spec, default_split="train"):
    """'tfds:mnist:test' -> ('tfds', 'mnist', 'test'); 'digits' -> ('bundled', 'digits', 'train').

    The whole spec must mean something: a tail after the split (``digits:test:x``),
    an empty part or a synthetic size that is not a positive whole number is a
    DatasetError. A tfds split keeps its own colons (``tfds:mnist:train[:80%]``)."""
    if not spec or not isinstance(spec, str):
        raise DatasetError(f"dataset spec must be a non-empty string, got {spec!r}")
    kind = spec.split(":", 1)[0]
    if kind == "tfds":
        parts = spec.split(":", 2)
        if len(parts) < 2 or not parts[1]:
            raise DatasetError(f"{spec!r}: write tfds:NAME[:SPLIT], e.g. tfds:mnist:test")
        if len(parts) > 2 and not parts[2]:
            raise DatasetError(f"{spec!r}: empty split; write tfds:{parts[1]}[:SPLIT]")
        return "tfds", parts[1], parts[2] if len(parts) > 2 else default_split
    parts = spec.split(":")
    if kind == "synthetic":
        if len(parts) > 2:
            raise DatasetError(f"{spec!r}: write synthetic[:N], with nothing after N")
        count = parts[1] if len(parts) > 1 else "1024"
        if not count.isdigit() or int(count) <= 0:
            raise DatasetError(f"{spec!r}: synthetic:N needs a positive whole number of "
                               f"examples, got {count!r}")
        return "synthetic", count, default_split
    if kind in BUNDLED:
        if len(parts) > 2:
            raise DatasetError(f"{spec!r}: write {kind}[:SPLIT] with SPLIT one of {SPLITS}; "
                               f"{':'.join(parts[2:])!r} after the split is not understood")
        split = parts[1] if len(parts) > 1 else default_split
        if split not in SPLITS:
            raise DatasetError(f"{spec!r}: bundled split must be one of {SPLITS}, got {split!r}")
        return "bundled", kind, split
    from keras_zoo.data.text import BUNDLED_TEXT  # a typo of a text set is suggested too

    known = list(BUNDLED) + list(BUNDLED_TEXT) + ["tfds:NAME", "synthetic"]
    close = difflib.get_close_matches(kind, known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise DatasetError(f"unknown dataset {spec!r}; known: {', '.join(known)}.{hint}")


def load(spec, split="train", image_shape=(32, 32, 1), num_classes=10, seed=0,
         data_dir=None):
    """Returns (unbatched tf.data.Dataset of (uint8 or float image, int label), DatasetInfo).

    ``image_shape``/``num_classes`` only shape the synthetic set."""
    kind, name, split = parse_spec(spec, split)
    if kind == "bundled":
        return _load_bundled(name, split)
    if kind == "tfds":
        return _load_tfds(name, split, data_dir)
    return _load_synthetic(name, image_shape, num_classes, seed)


CACHE_BYTES = 2 << 30  # keep a dataset in memory when it is below this


def load_images(spec, split="train", image_shape=(32, 32, 1), num_classes=10, seed=0,
                data_dir=None):
    """``load``, then cached in memory when the whole split fits in CACHE_BYTES
    (decoded once, reshuffled every pass)."""
    ds, info = load(spec, split, image_shape=image_shape, num_classes=num_classes, seed=seed,
                    data_dir=data_dir)
    if info.num_examples is not None and info.num_examples * info.example_bytes <= CACHE_BYTES:
        ds = ds.cache()
    return ds, info


def num_classes_of(spec, data_dir=None):
    """The class count of a labelled dataset spec (images or labelled text), or None."""
    from keras_zoo.data import text

    if text.is_text_spec(spec):
        _, info = text.load(spec, "train", data_dir=data_dir)
        return info.num_classes
    kind, name, _ = parse_spec(spec)
    if kind == "synthetic":
        return None
    if kind == "bundled":
        return _BUNDLED_INFO[name]["num_classes"]
    return _load_tfds(name, "train", data_dir)[1].num_classes


def stratified_holdout(labels, per_class, seed):
    """Boolean mask choosing ``per_class`` examples of every class of ``labels``
    (a seeded permutation within each class): the same mask for the same labels
    and seed on every machine."""
    labels = np.asarray(labels)
    mask = np.zeros(len(labels), bool)
    rng = np.random.default_rng(seed)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) <= per_class:
            raise DatasetError(f"class {int(c)} has {len(members)} examples: cannot hold "
                               f"out {per_class} of them and keep any for training")
        mask[rng.permutation(members)[:per_class]] = True
    return mask


def _load_bundled(name, split):
    with np.load(os.path.join(BUNDLED_DIR, BUNDLED[name])) as data:
        file_split = "test" if split == "test" else "train"
        x, y = data[f"x_{file_split}"], data[f"y_{file_split}"]
    if file_split == "train" and name in VALIDATION_PER_CLASS:
        held = stratified_holdout(y, VALIDATION_PER_CLASS[name], VALIDATION_SEED)
        keep = held if split == "validation" else ~held
        x, y = x[keep], y[keep]
    meta = _BUNDLED_INFO[name]
    images = (x.astype("float32") / meta["max_value"])[..., None]
    info = DatasetInfo(name, split, meta["num_classes"], meta["image_shape"], len(x))
    return tf.data.Dataset.from_tensor_slices((images, y.astype("int32"))), info


def _load_tfds(name, split, data_dir):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # DatasetNotFoundError and friends
        raise DatasetError(f"tfds dataset {name!r} not found: {str(e).splitlines()[0]}") from e
    try:
        ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    except Exception as e:
        raise DatasetError(
            f"tfds:{name}:{split} could not be read (is it downloaded/prepared in "
            f"{builder.data_dir!r}? splits: {list(builder.info.splits)}): "
            f"{str(e).splitlines()[0]}") from e
    features = builder.info.features
    num_classes = features["label"].num_classes
    shape = tuple(features["image"].shape)
    try:
        n = builder.info.splits[split].num_examples
    except Exception:  # noqa: BLE001  (sliced or unknown splits: size unknown, streamed)
        n = None
    return ds, DatasetInfo(name, split, num_classes, shape, n)


def _load_synthetic(count, image_shape, num_classes, seed):
    try:
        n = int(count)
    except ValueError:
        raise DatasetError(f"synthetic:N needs a whole number, got {count!r}") from None
    rng = np.random.default_rng(seed)
    images = rng.random((n,) + tuple(image_shape), dtype=np.float32)
    labels = rng.integers(0, num_classes, n).astype("int32")
    info = DatasetInfo("synthetic", "train", num_classes, tuple(image_shape), n)
    return tf.data.Dataset.from_tensor_slices((images, labels)), info


def to_model_input(image, image_size, num_channels):
    """Any image (uint8 0..255 or float 0..1, any size, 1 or 3 channels) ->
    float32 [0, 1] of (image_size, image_size, num_channels)."""
    if image.dtype == tf.uint8:
        image = tf.cast(image, tf.float32) / 255.0
    image = tf.cast(image, tf.float32)
    channels = image.shape[-1]
    if channels != num_channels:
        if channels == 1 and num_channels == 3:
            image = tf.image.grayscale_to_rgb(image)
        elif channels == 3 and num_channels == 1:
            image = tf.image.rgb_to_grayscale(image)
        else:
            raise DatasetError(f"cannot map {channels}-channel images to {num_channels} channels")
    if image.shape[0] != image_size or image.shape[1] != image_size:
        image = tf.image.resize(image, (image_size, image_size), method="bilinear")
    return image


def pipeline(ds, batch_size, image_size, num_channels, training, seed=0,
             shuffle_buffer=10_000, augment=None, repeat=None, cache=True):
    """Shapes a (image, label) dataset into static batches for fit/predict.

    Batches are always full (``drop_remainder=True``): TPUs and XLA compile one
    program per shape, and a ragged last batch would recompile or fail.
    ``augment`` maps a batch of images to a batch of images (training only).
    """
    if batch_size <= 0:
        raise DatasetError(f"batch_size must be positive, got {batch_size}")
    ds = ds.map(lambda x, y: (to_model_input(x, image_size, num_channels), y),
                num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat if repeat is not None else False:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=True)
    if augment is not None and training:
        ds = ds.map(lambda x, y: (augment(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def image_batches(ds, info, batch_size, image_size, num_channels, training, transform=None,
                  weighted=False):
    """The default ``ZooModel.batch_data``: images resized to the model's
    input, static batches. Training with a ``transform`` (the family's
    ``train_input_transform``: DINO's multi-crop, MAE's random-resized crop):
    it maps each decoded example at its own size *instead of* the resize, as
    the official recipes crop the original image, then the views are batched.
    Evaluation with ``weighted``: (x, y, w) where the partial last batch is
    padded with weight-0 copies, so every example counts once."""
    if training and transform is not None:
        ds = ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.batch(batch_size, drop_remainder=True)
    ds = ds.map(lambda x, y: (to_model_input(x, image_size, num_channels), y),
                num_parallel_calls=tf.data.AUTOTUNE)
    if not training and weighted and info.num_examples:
        ds = ds.map(lambda x, y: (x, y, tf.constant(1.0)))
        pad = -info.num_examples % batch_size
        if pad:
            ds = ds.concatenate(ds.take(1).map(lambda x, y, w: (x * 0, y, w * 0)).repeat(pad))
    return ds.batch(batch_size, drop_remainder=True)


def check_nonempty(ds, spec, batch_size):
    """Raises a clear error when a pipeline yields no batch at all."""
    cardinality = int(ds.cardinality())
    if cardinality == 0 or (cardinality == tf.data.UNKNOWN_CARDINALITY and
                            not any(True for _ in ds.take(1))):
        raise DatasetError(
            f"dataset {spec!r} yields no full batch of {batch_size}: it is empty or "
            "smaller than one batch")


def load_arrays(spec, split, image_size, num_channels):
    """Whole split as numpy arrays (small datasets: evaluation, calibration)."""
    ds, info = load(spec, split, image_shape=(image_size, image_size, num_channels))
    ds = ds.map(lambda x, y: (to_model_input(x, image_size, num_channels), y))
    xs, ys = [], []
    for x, y in ds.batch(1024):
        xs.append(x.numpy())
        ys.append(y.numpy())
    if not xs:
        raise DatasetError(f"dataset {spec!r} split {split!r} is empty")
    return np.concatenate(xs), np.concatenate(ys), info
