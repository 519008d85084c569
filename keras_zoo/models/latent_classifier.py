"""A small classifier on the frozen codes of a trained (V)AE encoder (a "linear/MLP probe")."""

from typing import ClassVar

import keras
from keras import layers

from keras_zoo import presets
from keras_zoo.models import vae  # noqa: F401  (registers the VAE presets used below)
from keras_zoo.models.autoencoder import Codec
from keras_zoo.models.base import ZooModel
from keras_zoo.presets import register_family, register_preset


def _resolve_encoder(encoder):
    """None | preset name or folder | {"family", "config"} | a Codec model
    -> (Codec model or None, JSON-ready {"family", "config"} or None)."""
    if encoder is None:
        return None, None
    if isinstance(encoder, Codec):
        # A copy: freezing must not change the caller's model.
        source = type(encoder)(**encoder.get_zoo_config())
        source.set_weights(encoder.get_weights())
    elif isinstance(encoder, str):
        source = ZooModel.from_preset(encoder)
    elif isinstance(encoder, dict) and set(encoder) == {"family", "config"}:
        source = presets.get_family(encoder["family"])(**encoder["config"])
    else:
        raise ValueError(
            "encoder must be None (raw pixels), a preset name or folder, a trained "
            "Autoencoder/SparseAutoencoder/VAE, or {'family': ..., 'config': {...}}; "
            f"got {encoder!r}")
    if not isinstance(source, Codec):
        raise TypeError(
            f"encoder {encoder if isinstance(encoder, str) else type(source).__name__!r} is "
            f"a {type(source).__name__}; LatentClassifier needs an Autoencoder, "
            "SparseAutoencoder or VAE")
    return source, {"family": type(source).__name__, "config": source.get_zoo_config()}


@register_family
@keras.saving.register_keras_serializable(package="keras_zoo")
class LatentClassifier(ZooModel):
    """Frozen encoder -> code -> [Dense(units, activation)] * len(hidden_units) -> logits.

    The encoder of a trained Autoencoder, SparseAutoencoder or VAE (the VAE's
    posterior mean mu) is copied in and frozen (``trainable=False``, run in
    inference mode); only the head trains. ``encoder=None`` gives the same
    head on the raw flattened pixels: the baseline the codes are measured
    against. ``encoder`` may be a preset name or folder (trained weights are
    loaded), a model, or ``{"family", "config"}``; the config stores the last
    form, and the encoder's weights travel with the classifier's, so
    ``.keras`` files and presets are self-contained. Defaults: one hidden
    layer of 64 ReLU units, 10 classes.
    """

    MEDIAPIPE_TASKS: ClassVar[dict] = {"serving_default": "image_classifier",
                                       "embedding": "image_embedder"}

    def __init__(self, encoder=None, image_size=None, num_channels=None, hidden_units=(64,),
                 num_classes=10, activation="relu", dropout=0.0, name="latent_classifier",
                 **kwargs):
        source, encoder_config = _resolve_encoder(encoder)
        shape = (image_size or 32, image_size or 32, num_channels or 1)
        if source is not None:
            expected = tuple(source.inputs[0].shape[1:])
            if (image_size, num_channels) != (None, None) and shape != expected:
                raise ValueError(
                    f"image_size={image_size}, num_channels={num_channels} do not match the "
                    f"encoder's input {expected}; leave them unset to follow the encoder")
            shape = expected
        images = keras.Input(shape, name="images")
        if source is None:
            x = layers.Flatten(name="pixels")(images)
        else:
            frozen = source.encoder
            frozen.trainable = False
            x = frozen(images, training=False)
            if isinstance(x, (list, tuple)):  # the VAE's [mu, logvar]: classify mu
                x = x[0]
        for i, units in enumerate(hidden_units):
            x = layers.Dense(units, activation=activation, name=f"head_dense_{i}")(x)
            if dropout:
                x = layers.Dropout(dropout, name=f"head_dropout_{i}")(x)
        logits = layers.Dense(num_classes, name="head", dtype="float32")(x)
        super().__init__(inputs=images, outputs=logits, name=name, **kwargs)
        # A preset name or a live model is not JSON: keep what rebuilds it.
        self._zoo_config["encoder"] = encoder_config
        self.encoder = None if source is None else source.encoder

    def embedding_kinds(self):
        return ("penultimate", "code")

    def embedding_model(self, kind=None):
        """``"penultimate"`` (default, as for every classifier): the input of
        the head, i.e. the last hidden layer this model trained on top of the
        code; ``"code"``: the frozen encoder's code (the VAE's mean; the
        flattened pixels when ``encoder=None``), identical to the encoder
        preset's own embedding."""
        kind = self._embedding_kind(kind)
        first = "head_dense_0" if self._zoo_config["hidden_units"] else "head"
        layer = "head" if kind == "penultimate" else first
        return self._embedding_from(kind, self.inputs, lambda: self.get_layer(layer).input)


register_preset("pixel_classifier_digits", "LatentClassifier",
                {"encoder": None, "hidden_units": [64]},
                "the latent classifier's head on raw 32x32x1 pixels (baseline)", tiny=True)
# Only the VAE one is tiny: the AE one adds no new code path to the suite.
for _name, _tiny in (("autoencoder_digits", False), ("vae_digits", True)):
    _entry = presets.get_preset(_name)
    register_preset(f"latent_classifier_{_name}", "LatentClassifier",
                    {"encoder": {"family": _entry.family, "config": _entry.config},
                     "hidden_units": [64]},
                    f"64-unit head on the frozen {_name} encoder (pass encoder=<trained "
                    "preset folder> to load trained weights)", tiny=_tiny)
