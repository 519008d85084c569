"""ZooModel: the functional Keras model every family builds on."""

import inspect

import keras

from keras_zoo import presets


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

    def __call__(self, inputs, *args, **kwargs):
        self._check_input_shape(inputs)
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

    def train_input_transform(self):
        """None, or a tf.data map fn ``(images, labels) -> (x, y)`` applied to
        each training batch before it reaches ``train_step`` (DINO's
        multi-crop views). Runs on the host inside tf.data."""
        return None

    def serving_signatures(self):
        """Named functions the exporter writes: ``{name: keras.Model}``.
        Default: the model itself as ``serving_default``. A family with
        several entry points (VAE encoder/decoder) returns each by name."""
        return {"serving_default": self}

    def trainable_parameter_count(self):
        """Trainable parameters (BatchNorm moving statistics excluded)."""
        return sum(int(keras.ops.size(w)) for w in self.trainable_weights)


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
