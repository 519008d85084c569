"""LeNet-5 (LeCun et al. 1998, "Gradient-Based Learning Applied to Document Recognition")."""

from typing import ClassVar

import keras
from keras import layers

from keras_zoo.models.base import ZooModel
from keras_zoo.presets import register_family, register_preset


@register_family
@keras.saving.register_keras_serializable(package="keras_zoo")
class LeNet(ZooModel):
    """C1 conv 5x5x6 -> S2 pool -> C3 conv 5x5x16 -> S4 pool -> C5 120 -> F6 84 -> 10.

    32x32x1 input, 61,706 parameters. The paper used tanh and trainable
    average-pooling "subsampling"; ``activation="relu", pooling="max"`` gives
    the modern variant. C3 here connects to all six S2 maps (the paper's
    sparse connection table was a compute-saving device of 1998).
    """

    MEDIAPIPE_TASKS: ClassVar[dict] = {"serving_default": "image_classifier",
                                       "embedding": "image_embedder"}

    def __init__(self, image_size=32, num_channels=1, filters=(6, 16), dense_units=(120, 84),
                 num_classes=10, activation="tanh", pooling="average", name="lenet",
                 **kwargs):
        if pooling not in ("average", "max"):
            raise ValueError(f"pooling must be 'average' or 'max', got {pooling!r}")
        pool = layers.AveragePooling2D if pooling == "average" else layers.MaxPooling2D
        inputs = keras.Input((image_size, image_size, num_channels), name="images")
        x = inputs
        for i, f in enumerate(filters):
            x = layers.Conv2D(f, 5, activation=activation, name=f"conv_{i}")(x)
            x = pool(2, name=f"pool_{i}")(x)
        x = layers.Flatten(name="flatten")(x)
        for i, units in enumerate(dense_units):
            x = layers.Dense(units, activation=activation, name=f"dense_{i}")(x)
        outputs = layers.Dense(num_classes, name="head", dtype="float32")(x)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)

    def embedding_kinds(self):
        return ("penultimate",)

    def embedding_model(self, kind=None):
        """``"penultimate"``: the input of the classifier head (F6: the last of
        ``dense_units``, 84 by default), the
        features the head separates linearly."""
        kind = self._embedding_kind(kind)
        return self._embedding_from(kind, self.inputs,
                                    lambda: self.get_layer("head").input)


register_preset("lenet5", "LeNet", {}, "LeNet-5, 32x32x1 input, 10 classes", tiny=True)
register_preset("lenet5_relu", "LeNet", {"activation": "relu", "pooling": "max"},
                "LeNet-5 with ReLU and max pooling")
