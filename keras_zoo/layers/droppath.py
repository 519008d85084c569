"""Stochastic depth (Huang et al. 2016, "Deep Networks with Stochastic Depth")."""

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="keras_zoo")
class DropPath(layers.Layer):
    """Drops a whole residual branch for a random ``rate`` of the samples.

    In training each sample's branch output is zeroed with probability
    ``rate`` and otherwise scaled by 1 / (1 - rate), so its expectation is
    unchanged; at inference the branch passes through. This is timm's and
    DINO's ``drop_path`` (facebookresearch/dino ``vision_transformer.py``):
    ``floor(keep_prob + U[0, 1))`` per sample, then ``x / keep_prob * mask``.
    ViT/DeiT-style models raise the rate linearly over depth (see
    ``drop_path_rates``).
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ValueError(f"DropPath rate must be a number in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self.seed = seed
        if self.rate > 0:  # as keras.layers.Dropout: no RNG state without a rate
            self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if not training or self.rate == 0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        noise = keras.random.uniform(shape, dtype=x.dtype, seed=self.seed_generator)
        return x / ops.cast(keep, x.dtype) * ops.floor(keep + noise)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


def drop_path_rates(rate, depth):
    """Per-block rates rising linearly from 0 to ``rate``: DeiT/timm/DINO's
    ``torch.linspace(0, drop_path_rate, depth)`` (the "stochastic depth decay rule")."""
    if depth <= 1:
        return [0.0] * depth
    return [rate * i / (depth - 1) for i in range(depth)]
