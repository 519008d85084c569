"""Position-wise feed-forward block (the "MLP" of a transformer block)."""

import keras
from keras import layers

from keras_zoo.layers import activations
from keras_zoo.layers.initializers import initializer


@keras.saving.register_keras_serializable(package="keras_zoo")
class FeedForward(layers.Layer):
    """Dense(hidden_dim, activation) -> Dropout -> Dense(output dim) -> Dropout.

    ViT uses GELU with ``hidden_dim = 4 * dim``; the 2017 Transformer ReLU with
    2048 for a 512-wide model. The output width defaults to the input width.
    ``activation_dropout`` is the rate after the activation (default: the same
    as ``dropout``, as timm's ViT MLP); the 2017 paper and GPT-2 use dropout
    on the block's output only (``activation_dropout=0``).
    ``weight_init``: a scheme of ``keras_zoo.layers.initializers``.
    """

    def __init__(self, hidden_dim, activation="gelu", dropout=0.0, output_dim=None,
                 activation_dropout=None, weight_init="keras", **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.activation = activation
        self.dropout = dropout
        self.output_dim = output_dim
        self.activation_dropout = activation_dropout
        self.weight_init = weight_init
        initializer(weight_init, "mlp_kernel")  # an unknown scheme fails here
        self._dropout = layers.Dropout(dropout)
        self._activation_dropout = layers.Dropout(
            dropout if activation_dropout is None else activation_dropout)

    def build(self, input_shape):
        out_dim = self.output_dim or input_shape[-1]
        # The activation is applied here rather than inside fc1 so that "gelu"
        # gets keras_zoo's exact GELU with its faster hand-written gradient.
        init = lambda: {"kernel_initializer": initializer(self.weight_init, "mlp_kernel"),
                        "bias_initializer": initializer(self.weight_init, "mlp_bias")}
        self.fc1 = layers.Dense(self.hidden_dim, dtype=self.dtype_policy, name="fc1", **init())
        self._activation = activations.get(self.activation)
        self.fc1.build(input_shape)
        self.fc2 = layers.Dense(out_dim, dtype=self.dtype_policy, name="fc2", **init())
        self.fc2.build(tuple(input_shape[:-1]) + (self.hidden_dim,))

    def call(self, x, training=None):
        x = self._activation_dropout(self._activation(self.fc1(x)), training=training)
        return self._dropout(self.fc2(x), training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_dim or input_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim, activation=self.activation,
                      dropout=self.dropout, output_dim=self.output_dim,
                      activation_dropout=self.activation_dropout, weight_init=self.weight_init)
        return config
