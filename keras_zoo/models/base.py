"""ZooModel: the functional Keras model every family builds on."""

import inspect
import numbers
from typing import ClassVar

import keras

from keras_zoo import presets


class EmbeddingError(ValueError):
    """A model that has no embedding (no ``embedding_model`` hook)."""


class ZooModel(keras.Model):
    """A functional ``keras.Model`` built from a plain config.

    A family subclass builds its graph in ``__init__`` from keyword arguments
    that are plain numbers/strings/lists, and calls
    ``super().__init__(inputs=..., outputs=...)``. Those arguments *are* the
    config: ``__new__`` records them (defaults filled in), ``get_zoo_config()``
    returns them, presets store them as JSON and ``from_config`` passes them
    back to ``__init__`` — so ``.keras`` files and presets round-trip without
    per-family code.
    """

    def __new__(cls, *args, **kwargs):
        instance = super().__new__(cls, *args, **kwargs)
        try:
            bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
        except TypeError:  # Keras probing the class (inject_functional_model_class)
            return instance
        bound.apply_defaults()
        config = {k: v for k, v in list(bound.arguments.items())[1:]
                  if k not in ("kwargs", "name")}
        check_sizes(cls.__name__, config, none_ok={"num_classes"} | {  # None: features only
            k for k, p in inspect.signature(cls.__init__).parameters.items() if p.default is None})
        qat = bound.arguments.get("kwargs", {}).get("qat")
        if qat is not None:
            config["qat"] = qat
        vars(instance)["_zoo_config"] = _plain(config)  # bypasses Keras' attribute tracking
        return instance

    def __init__(self, *args, qat=None, **kwargs):
        super().__init__(*args, **kwargs)
        if qat is not None:
            # Quantization-aware training: the config's "qat" entry (plain data)
            # makes the model's kernels and activations fake-quantized, so
            # .keras files and presets carry it like any other option.
            from keras_zoo import quantization

            quantization.apply(self, qat)

    @classmethod
    def config_keys(cls):
        return [k for k in inspect.signature(cls.__init__).parameters
                if k not in ("self", "kwargs", "name")] + ["qat"]

    def get_zoo_config(self):
        """The constructor arguments of this model: JSON-ready data."""
        return dict(self._zoo_config)

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, **self.get_zoo_config()}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        trainable = config.pop("trainable", True)
        model = cls(**config)
        model.trainable = trainable
        return model

    @classmethod
    def from_preset(cls, preset, load_weights=True, **overrides):
        """Builds a model from a registry name, a preset folder (local or
        ``gs://``), or a keras-hub preset folder; ``overrides`` change config
        values (``num_classes=10``, ``image_size=384``): weights that still fit
        are loaded, position embeddings are resampled, a resized head is new."""
        return presets.load(cls, preset, load_weights=load_weights, **overrides)

    def save_to_preset(self, directory, description=""):
        """Writes config.json + model.weights.h5 + manifest.json (sha256)."""
        return presets.save_to_preset(self, directory, description)

    # ---- vision inputs: what the weights expect (keras_zoo.preprocessing)

    @property
    def preprocessing(self):
        """The image preprocessing the weights were trained with (mean/std,
        resize/crop rule, interpolation: ``keras_zoo.preprocessing``), defaults
        filled in; None for a model that records none."""
        spec = self._zoo_config.get("preprocessing")
        if spec is None:
            return None
        from keras_zoo.preprocessing import check_preprocessing

        shape = self.inputs[0].shape
        return check_preprocessing(spec, shape[-1], shape[1])

    @property
    def label_names(self):
        """One name per output class (from the checkpoint's ``id2label``), or None."""
        names = self._zoo_config.get("label_names")
        return None if names is None else list(names)

    def _unit_images(self, x):
        """uint8 images -> float32 / 255 for a model with one image input (the
        dtype rule of ``keras_zoo.preprocessing``); anything else unchanged."""
        if len(self.inputs) != 1 or len(self.inputs[0].shape) != 4:
            return x
        from keras_zoo.preprocessing import unit_images

        return unit_images(x)

    def predict(self, x, *args, **kwargs):
        """``keras.Model.predict``; an empty batch is one clear ValueError
        (Keras' own loop fails with an UnboundLocalError on it). uint8 images
        are scaled by 1/255 (``keras_zoo.preprocessing``)."""
        x = self._unit_images(x)
        arrays = (list(x.values()) if isinstance(x, dict)
                  else list(x) if isinstance(x, (list, tuple)) else [x])
        for a in arrays:
            shape = getattr(a, "shape", None)
            if shape is not None and len(shape) and shape[0] == 0:
                raise ValueError(f"{type(self).__name__}.predict got an empty batch (input of "
                                 f"shape {tuple(shape)}): give at least one example")
        if hasattr(x, "shape") or isinstance(x, dict):
            self._check_input_shape(x)  # the checks __call__ makes (ids, shapes)
        try:
            return super().predict(x, *args, **kwargs)
        except UnboundLocalError:  # Keras' loop saw no batch at all (an empty dataset)
            raise ValueError(f"{type(self).__name__}.predict got no batch: the input "
                             "dataset is empty") from None

    def __call__(self, inputs, *args, **kwargs):
        self._check_input_shape(inputs)
        inputs = self._unit_images(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def _check_input_shape(self, inputs):
        """One clear error instead of a deep stack trace for a wrong input shape."""
        if isinstance(inputs, (dict, list, tuple)) or not hasattr(inputs, "shape"):
            return
        expected = tuple(self.inputs[0].shape) if len(self.inputs) == 1 else None
        got = tuple(inputs.shape)
        if expected is None:
            return
        if len(got) != len(expected) or any(
                e is not None and g is not None and e != g
                for e, g in zip(expected[1:], got[1:])):
            what = "channels" if len(got) == len(expected) == 4 and \
                expected[1:3] == got[1:3] else "shape"
            raise ValueError(
                f"{type(self).__name__} {self.name!r} expects inputs of shape "
                f"(batch, {', '.join(map(str, expected[1:]))}); got {got} "
                f"(wrong {what}). Rebuild with from_preset(..., image_size=..., "
                f"num_channels=...) or resize the input.")

    # ---- hooks the generic trainer and exporter use; families override them.

    def compile_defaults(self):
        """Loss and metrics ``experiments.train`` compiles with. Classifiers:
        sparse categorical cross-entropy on logits + accuracy. A family with
        its own objective (VAE, MAE, DINO) overrides ``train_step`` and
        returns ``{"loss": None, "metrics": None}`` here. (``None``, not ``[]``:
        under a distribution strategy Keras builds an empty metrics list by
        calling the model on the training batch, which fails for a model whose
        training input is not its serving input, e.g. DINO's multi-crop views.)"""
        return {
            "loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        }

    # ---- data: how a dataset spec becomes batches. The trainer asks, the
    # family answers; the image pipeline is the default, text families
    # tokenize, pack or bucket and build their targets in their own file.

    def load_data(self, spec, split="train", seed=0, data_dir=None):
        """``(examples, info)``: the unbatched examples of a dataset spec and
        its info (``num_examples``, ``example_bytes``). Default: images and
        labels (``keras_zoo.data.load``), cached in memory when small."""
        from keras_zoo import data

        if data.is_text_spec(spec):
            raise data.DatasetError(
                f"dataset {spec!r} is text; {type(self).__name__} trains on images "
                "(digits, tfds:NAME, synthetic)")
        shape = tuple(self.inputs[0].shape[1:])
        return data.load_images(spec, split, image_shape=shape,
                                num_classes=self.get_zoo_config().get("num_classes") or 10,
                                seed=seed, data_dir=data_dir)

    def prepare_data(self, examples, info, work_dir=None):
        """Called once by the trainer on the training examples before any
        batch is made: fit what the family learns from the training split (a
        text family's tokenizer), keeping it under ``work_dir`` so that a
        resumed run reuses it. Default: nothing to fit."""

    def batch_data(self, examples, info, batch_size, training):
        """Static-shaped batches ``(x, y[, sample_weight])`` from examples.

        ``training=True``: the examples arrive shuffled (the trainer shuffles
        each pass with its own seed, for exact resume); the family batches
        and augments (``train_input_transform``). ``training=False``: every
        example exactly once; a partial last batch is padded with weight-0
        examples when the family's loss takes sample weights."""
        from keras_zoo.data import image_batches

        _, size, _, channels = self.inputs[0].shape
        weighted = not training and self.compile_defaults().get("loss") is not None
        return image_batches(examples, info, batch_size, size, channels, training,
                             transform=self._train_transform() if training else None,
                             weighted=weighted)

    def _train_transform(self):
        """``train_input_transform()``, made once: it may own random-generator
        state, which must not be re-created (or created inside the tf.data
        function the trainer traces per pass)."""
        if "_zoo_transform" not in vars(self):
            import tensorflow as tf

            with tf.init_scope():
                vars(self)["_zoo_transform"] = self.train_input_transform()
        return vars(self)["_zoo_transform"]

    def throughput_units(self, examples):
        """(count, unit) that the trainer's progress line reports for
        ``examples`` training examples: images by default; text families say
        sequences or tokens."""
        return examples, "img"

    # True when ``steps_per_pass`` is exact for every shuffle (fixed-size
    # batches): a resumed run then skips whole passes instead of replaying them.
    batches_per_pass_exact = True

    def steps_per_pass(self, info, batch_size):
        """Training batches in one pass over ``info``'s examples (an estimate
        when ``batches_per_pass_exact`` is False), or None when unknown."""
        return (info.num_examples or 0) // batch_size or None

    def evaluation_callbacks(self, examples, info, batch_size):
        """Extra Keras callbacks the trainer runs at each evaluation (a
        translation family's BLEU on a sample of the validation split)."""
        return []

    def train_input_transform(self):
        """None, or a tf.data map fn ``(image, label) -> (x, y)`` applied to
        each decoded training example at its own size (uint8 or float in
        [0, 1]), before batching, in place of the resize to the model's input
        (DINO's multi-crop views, MAE's random-resized crops: the official
        recipes crop the original image). Its outputs must have static shapes.
        Runs on the host inside tf.data; None: resize only."""
        return None

    def representative_inputs(self, spec, split, num_samples, signature="serving_default"):
        """``({input name: array (n, ...)}, labels or None)`` for one serving
        signature from a dataset spec, or None to let the exporter use its own
        (images, synthetic). The exporter calibrates int8 and verifies with
        these; a text family tokenizes and packs its text here."""

    def serving_signatures(self):
        """Named functions the exporter writes: ``{name: keras.Model}``.
        Default: the model itself as ``serving_default``. A family with
        several entry points (VAE encoder/decoder) returns each by name.
        The exporter adds ``"embedding"`` itself (``export_signatures``)."""
        return {"serving_default": self}

    # {exported signature: the MediaPipe Task that runs it} ("image_classifier",
    # "image_embedder", "text_classifier", "text_embedder"); the exporter writes
    # that task's TFLite Metadata into a file holding that one signature.
    MEDIAPIPE_TASKS: ClassVar[dict] = {}

    def mediapipe_tasks(self):
        """``MEDIAPIPE_TASKS`` of this model: the ``embedding`` entry only when
        the family has an embedding hook. A family whose tasks depend on its
        config (a headless ViT, BERT's ``task``) overrides this."""
        tasks = dict(self.MEDIAPIPE_TASKS)
        if not self.embedding_kinds():
            tasks.pop("embedding", None)
        return tasks

    def no_weight_decay_variables(self):
        """Variables the trainer's optimizer leaves undecayed. Default: biases and
        norm scales (every variable of rank <= 1). A family with other such
        parameters (Mamba's A_log) adds them here."""
        return [v for v in self.trainable_variables if len(v.shape) <= 1]

    def export_signatures(self):
        """What the exporter writes: ``serving_signatures()`` plus
        ``"embedding"`` (the default ``embedding_model()``) when the family
        has an embedding hook; on-device retrieval runs that signature."""
        signatures = dict(self.serving_signatures())
        if self.embedding_kinds() and "embedding" not in signatures:
            signatures["embedding"] = self.embedding_model()
        return signatures

    # ---- embeddings: one vector per input, the features a family is "for".

    def embedding_kinds(self):
        """The names ``embedding_model(kind=...)`` accepts, the default first;
        ``()`` for a family without an embedding hook (the base default)."""
        return ()

    def embedding_model(self, kind=None):
        """A functional ``keras.Model`` from this model's inputs to its embedding.

        The contract a family's override keeps (``embed``, the exporter's
        ``embedding`` signature and ``experiments.embed`` rely on nothing else):

        * inputs: the serving inputs of the model (same names, shapes and
          dtypes as ``self.inputs``: images for vision families; token ids
          and, where the family has one, a padding mask for text families);
        * one output named ``"embedding"``: float32 ``(batch, dim)`` with a
          static ``dim``, deterministic (inference mode: no dropout, no
          masking, no sampling);
        * it shares this model's layers and weights (no copy), so it follows
          training and ``load_weights``; build it with ``self._embedding_from``
          from tensors of the model's graph or of a sub-model;
        * ``kind``: None for the family's default, else one of
          ``embedding_kinds()``; an unknown kind raises ValueError naming the
          valid ones (``self._embedding_kind(kind)`` does that).

        What each family returns is written next to its override (MLP/LeNet:
        the penultimate layer; ResNet: pooled features; ViT: CLS token or mean
        of the patch tokens; AE: the code; VAE: the posterior mean; MAE: the
        unmasked encoder's CLS token; DINO: the teacher backbone's). Text
        families choose theirs the same way (BERT pooled or mean-pooled tokens,
        GPT/Mamba mean or last token, the Transformer's encoder mean).
        """
        raise EmbeddingError(
            f"{type(self).__name__} has no embedding hook (embedding_model); families "
            "with one: " + ", ".join(_families_with_embeddings()))

    def embed(self, x, batch_size=256, kind=None, verbose=False):
        """Embeddings of ``x`` (an array of inputs, batch first) as a numpy
        float32 array ``(N, dim)``, computed in batches of ``batch_size``."""
        import numpy as np

        from keras_zoo import evaluation

        model = self.embedding_model(kind)
        x = self._unit_images(np.asarray(x))
        expected = tuple(model.inputs[0].shape[1:])
        if x.ndim != len(expected) + 1 or any(
                e is not None and g != e for e, g in zip(expected, x.shape[1:])):
            raise ValueError(
                f"{type(self).__name__}.embed expects inputs of shape (N, "
                f"{', '.join(map(str, expected))}); got {x.shape}")
        return evaluation.extract_features(model, x, batch_size=batch_size, progress=verbose)

    def _embedding_kind(self, kind):
        kinds = self.embedding_kinds()
        if kind is None:
            return kinds[0]
        if kind not in kinds:
            raise ValueError(f"{type(self).__name__} has no embedding kind {kind!r}; "
                             f"its kinds: {', '.join(kinds)}")
        return kind

    def _embedding_from(self, kind, inputs, build):
        """The cached ``keras.Model(inputs, build())`` for ``kind``, its output
        renamed ``embedding`` and cast to float32. ``build`` runs once."""
        cache = vars(self).setdefault("_embedding_models", {})  # bypasses Keras tracking
        if kind not in cache:
            if isinstance(inputs, (list, tuple)) and len(inputs) == 1:
                inputs = inputs[0]  # a single-input model is called with a tensor
            features = keras.layers.Activation("linear", name="embedding",
                                               dtype="float32")(build())
            cache[kind] = keras.Model(inputs, features, name=f"{self.name}_embedding_{kind}")
        return cache[kind]

    def trainable_parameter_count(self):
        """Trainable parameters (BatchNorm moving statistics excluded)."""
        return sum(int(keras.ops.size(w)) for w in self.trainable_weights)


class _FunctionCall(keras.layers.Layer):
    """Calls ``fn`` on its inputs and owns ``owned`` (already built layers of
    a model), so a signature model made of it tracks their weights."""

    def __init__(self, fn, owned, **kwargs):
        super().__init__(**kwargs)
        self._fn = fn
        self.owned = list(owned)

    def call(self, inputs):
        return self._fn(inputs)


def counted(batches):
    """``batches`` with its length asserted, counted once when tf.data cannot
    know it (filters, bucketing). Keras 3's ``evaluate()`` on a dataset of
    unknown length returned wrong metrics (one 8-batch validation pass: loss
    4.05 where every batch log and an eager recomputation gave 4.56), so
    evaluation passes of such pipelines carry their length."""
    import tensorflow as tf

    if int(batches.cardinality()) != int(tf.data.UNKNOWN_CARDINALITY):
        return batches
    count = int(batches.reduce(0, lambda n, _: n + 1))
    return batches.apply(tf.data.experimental.assert_cardinality(count))


def signature_model(inputs, fn, owned_layers, name):
    """A functional ``keras.Model`` for an exported signature whose body is a
    method of the family (``fn(inputs)`` -> tensor or dict), e.g. one
    decoder step over a cache. ``owned_layers``: the layers ``fn`` uses."""
    return keras.Model(inputs, _FunctionCall(fn, owned_layers, name=f"{name}_fn")(inputs),
                       name=name)


# Config options that are sizes or counts, in every family: each must be a
# positive integer (lists: each entry), else a model without blocks or a
# ZeroDivisionError deep in a layer is all the user gets. ``None`` stays
# allowed where the family gives it a meaning (num_classes=None: features).
SIZE_KEYS = frozenset({
    "image_size", "patch_size", "num_channels", "num_classes", "hidden_dim", "num_layers",
    "num_heads", "mlp_dim", "latent_dim", "out_dim", "bottleneck_dim", "head_layers",
    "decoder_hidden_dim", "decoder_num_layers", "decoder_num_heads", "decoder_mlp_dim",
    "local_crop_size", "steps_per_epoch", "total_steps", "vocab_size", "num_encoder_layers",
    "num_decoder_layers", "max_source_length", "max_target_length", "state_dim",
    "conv_kernel", "max_positions", "sequence_length", "prefill_length", "intermediate_dim",
    "max_sequence_length", "num_segments", "max_predictions_per_seq", "dt_rank",
    "pad_vocab_multiple", "chunk_size"})
# Ratios that need not be whole (Mamba's expand 1.5 on a width of 64): a real number > 0.
POSITIVE_NUMBER_KEYS = frozenset({"expand"})
# Probabilities (dropout rates, masking rates): a real number in [0, 1).
RATE_SUFFIXES = ("dropout", "_rate", "_prob")
# Options that say how wide / deep / large a model is: the parameter count is
# at least depth * width**2 + vocab_size * width in every family that has them.
WIDTH_KEYS = ("hidden_dim",)
DEPTH_KEYS = ("num_layers", "num_encoder_layers", "num_decoder_layers", "decoder_num_layers")
MAX_DEPTH = 4096  # building 10**6 blocks would run for hours before any memory check
SIZE_LIST_KEYS = frozenset({"hidden_units", "conv_filters", "filters", "dense_units",
                            "stage_depths", "stage_filters"})


def check_sizes(family, config, none_ok=()):
    """Raises one ValueError naming the first size option that is not a positive
    integer (``None`` only in ``none_ok``: num_classes and the options whose
    default is None), the first
    rate outside [0, 1), or a config whose weights alone could not fit in this
    machine's memory (checked before building: n_layer=10**6 would hang,
    hidden_dim=10**7 crash)."""
    def positive(v):
        return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0

    for key, value in config.items():
        if key in SIZE_KEYS and not (value is None and key in none_ok) and not positive(value):
            raise ValueError(f"{family}: {key} must be a positive integer, got {value!r}")
        if key in POSITIVE_NUMBER_KEYS and not (value is None and key in none_ok) and not (
                isinstance(value, numbers.Real) and not isinstance(value, bool) and value > 0):
            raise ValueError(f"{family}: {key} must be a positive number, got {value!r}")
        if key in SIZE_LIST_KEYS and value is not None and (
                not isinstance(value, (list, tuple)) or not all(map(positive, value))):
            raise ValueError(f"{family}: {key} must be a list of positive integers, got "
                             f"{value!r}")
        if key.endswith(RATE_SUFFIXES) and not (value is None and key in none_ok) and not (
                isinstance(value, numbers.Real) and not isinstance(value, bool)
                and 0 <= value < 1):
            raise ValueError(f"{family}: {key} must be a number in [0, 1), got {value!r}")
    for key in DEPTH_KEYS:
        if isinstance(config.get(key), int) and config[key] > MAX_DEPTH:
            raise ValueError(f"{family}: {key}={config[key]:,} is more than {MAX_DEPTH:,} "
                             "blocks (published models have up to ~200): a typo?")
    need = minimum_parameters(config)
    memory = _physical_memory()
    if memory and need * 4 > memory:
        sizes = {k: config[k] for k in (*WIDTH_KEYS, *DEPTH_KEYS, "vocab_size") if k in config}
        raise ValueError(f"{family}: {sizes} needs at least {need:,} parameters "
                         f"({need * 4 / 2**30:,.0f} GiB of float32 weights), more than this "
                         f"machine's {memory / 2**30:,.0f} GiB of memory")


def minimum_parameters(config):
    """A lower bound of the parameter count from the width, depth and
    vocabulary options (0 for families without them)."""
    def size(key):
        value = config.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    width = max((size(k) for k in WIDTH_KEYS), default=0)
    depth = sum(size(k) for k in DEPTH_KEYS)
    return depth * width * width + size("vocab_size") * width


def _physical_memory():
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _families_with_embeddings():
    presets._import_families()
    return sorted(name for name, cls in presets._FAMILIES.items()
                  if cls.embedding_kinds is not ZooModel.embedding_kinds)


def families_with_mediapipe_tasks():
    """{MediaPipe task: [family names]} over the registered families."""
    presets._import_families()
    out = {}
    for name, cls in sorted(presets._FAMILIES.items()):
        for task in dict.fromkeys(cls.MEDIAPIPE_TASKS.values()):
            out.setdefault(task, []).append(name)
    return out


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
