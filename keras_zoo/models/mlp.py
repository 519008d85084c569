"""MLP: a multi-layer perceptron on flattened images (Rumelhart et al. 1986)."""

from typing import ClassVar

import keras
from keras import layers

from keras_zoo.models.base import ZooModel
from keras_zoo.presets import register_family, register_preset


@register_family
@keras.saving.register_keras_serializable(package="keras_zoo")
class MLP(ZooModel):
    """Flatten -> [Dense(units, activation) -> Dropout] * len(hidden_units) -> Dense(classes).

    Defaults: 32x32x1 input (the bundled digits pipeline), two hidden layers
    of 512 and 256 ReLU units, 10 classes (logits, no softmax).
    """

    MEDIAPIPE_TASKS: ClassVar[dict] = {"serving_default": "image_classifier",
                                       "embedding": "image_embedder"}

    def __init__(self, image_size=32, num_channels=1, hidden_units=(512, 256),
                 num_classes=10, activation="relu", dropout=0.0, name="mlp", **kwargs):
        inputs = keras.Input((image_size, image_size, num_channels), name="images")
        x = layers.Flatten(name="flatten")(inputs)
        for i, units in enumerate(hidden_units):
            x = layers.Dense(units, activation=activation, name=f"dense_{i}")(x)
            if dropout:
                x = layers.Dropout(dropout, name=f"dropout_{i}")(x)
        outputs = layers.Dense(num_classes, name="head", dtype="float32")(x)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)

    def embedding_kinds(self):
        return ("penultimate",)

    def embedding_model(self, kind=None):
        """``"penultimate"``: the input of the classifier head (the last hidden layer; the flattened pixels when there is none), the
        features the head separates linearly."""
        kind = self._embedding_kind(kind)
        return self._embedding_from(kind, self.inputs,
                                    lambda: self.get_layer("head").input)


_DIGITS = dict(image_size=32, num_channels=1, num_classes=10)
register_preset("mlp_small", "MLP", dict(_DIGITS, hidden_units=[256]),
                "one hidden layer of 256 units", tiny=True)
register_preset("mlp_base", "MLP", dict(_DIGITS, hidden_units=[512, 256], dropout=0.1),
                "512-256 hidden units")
register_preset("mlp_large", "MLP", dict(_DIGITS, hidden_units=[1024, 1024, 1024],
                                         dropout=0.2), "three hidden layers of 1024")
