"""Transformer encoder block, pre-LN (ViT) or post-LN (Vaswani et al. 2017)."""

import keras
from keras import layers

from keras_zoo.layers.attention import MultiHeadAttention
from keras_zoo.layers.droppath import DropPath
from keras_zoo.layers.feedforward import FeedForward
from keras_zoo.layers.normalization import LayerNormalization


@keras.saving.register_keras_serializable(package="keras_zoo")
class TransformerEncoderBlock(layers.Layer):
    """Self-attention + feed-forward, each wrapped in a residual connection.

    ``norm_first=True`` (pre-LN, ViT / GPT-2):  x + Attn(LN(x)), then x + FFN(LN(x)).
    ``norm_first=False`` (post-LN, the 2017 paper): LN(x + Attn(x)), then LN(x + FFN(x)).
    Pre-LN keeps an identity path from input to output, which is why deep
    pre-LN stacks train without learning-rate warm-up tricks.

    Args:
        num_heads: attention heads. mlp_dim: feed-forward hidden width.
        dropout: on the residual branches. attention_dropout: on attention weights.
        activation: feed-forward activation ("gelu" in ViT, "relu" in 2017).
        layer_norm_epsilon: 1e-6 as in ViT.
        drop_path_rate: stochastic depth on both residual branches (each
            sample's branch dropped with this probability in training; timm /
            DINO ``Block``). 0 = off.
        weight_init: initialisation scheme of ``keras_zoo.layers.initializers``
            for the attention and MLP kernels and biases.

    The norms are ``keras_zoo.layers.normalization.LayerNormalization``:
    Keras' numbers and weights, lowered to ops that int8 TFLite kernels take.
    """

    def __init__(self, num_heads, mlp_dim, dropout=0.0, attention_dropout=0.0,
                 activation="gelu", norm_first=True, layer_norm_epsilon=1e-6,
                 use_bias=True, drop_path_rate=0.0, weight_init="keras", **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation = activation
        self.norm_first = norm_first
        self.layer_norm_epsilon = layer_norm_epsilon
        self.use_bias = use_bias
        self.drop_path_rate = drop_path_rate
        self.weight_init = weight_init
        self.drop_path = DropPath(drop_path_rate, dtype=self.dtype_policy)

    def build(self, input_shape):
        kw = dict(dtype=self.dtype_policy)
        self.attention_norm = LayerNormalization(
            epsilon=self.layer_norm_epsilon, name="attention_norm", **kw)
        self.attention = MultiHeadAttention(
            self.num_heads, dropout=self.attention_dropout, use_bias=self.use_bias,
            weight_init=self.weight_init, name="attention", **kw)
        self.attention_dropout_layer = layers.Dropout(self.dropout)
        self.mlp_norm = LayerNormalization(
            epsilon=self.layer_norm_epsilon, name="mlp_norm", **kw)
        self.mlp = FeedForward(self.mlp_dim, activation=self.activation,
                               dropout=self.dropout, weight_init=self.weight_init,
                               name="mlp", **kw)
        for sub in (self.attention_norm, self.attention, self.mlp_norm, self.mlp,
                    self.drop_path):
            sub.build(input_shape)

    def call(self, x, attention_mask=None, use_causal_mask=False, training=None):
        def attend(h):
            h = self.attention(h, attention_mask=attention_mask,
                               use_causal_mask=use_causal_mask, training=training)
            return self.drop_path(self.attention_dropout_layer(h, training=training),
                                  training=training)

        def mlp(h):
            return self.drop_path(self.mlp(h, training=training), training=training)

        if self.norm_first:
            x = x + attend(self.attention_norm(x))
            return x + mlp(self.mlp_norm(x))
        x = self.attention_norm(x + attend(x))
        return self.mlp_norm(x + mlp(x))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, mlp_dim=self.mlp_dim,
                      dropout=self.dropout, attention_dropout=self.attention_dropout,
                      activation=self.activation, norm_first=self.norm_first,
                      layer_norm_epsilon=self.layer_norm_epsilon,
                      use_bias=self.use_bias, drop_path_rate=self.drop_path_rate,
                      weight_init=self.weight_init)
        return config
