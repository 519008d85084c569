"""The input normalisation that travels with a vision preset, inside the graph."""

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="keras_zoo")
class ImageNormalization(keras.layers.Layer):
    """(x - mean) / std per channel, on images in [0, 1].

    The first layer of a vision model whose weights were trained on
    normalised pixels (ImageNet's mean (0.485, 0.456, 0.406) / std (0.229,
    0.224, 0.225) for torchvision/timm/DINO/MAE checkpoints, 0.5 / 0.5 for
    Google's ViTs), so that Keras, SavedModel and TFLite all take the same
    [0, 1] image. Constants, no weights: a preset's weight file is the same
    with or without it. Computes in float32.
    """

    def __init__(self, mean, std, **kwargs):
        super().__init__(**kwargs)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    def call(self, images):
        x = ops.cast(images, "float32")
        mean = np.asarray(self.mean, "float32")
        inverse_std = 1.0 / np.asarray(self.std, "float32")
        return ops.cast((x - mean) * inverse_std, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}
