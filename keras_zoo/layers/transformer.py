"""Transformer blocks (Vaswani et al. 2017): encoder (pre-LN as ViT/GPT-2, or
post-LN as the paper) and decoder with cross-attention, both with a key/value
cache for incremental decoding."""

import keras
from keras import layers

from keras_zoo.layers.attention import MultiHeadAttention
from keras_zoo.layers.droppath import DropPath
from keras_zoo.layers.feedforward import FeedForward
from keras_zoo.layers.normalization import LayerNormalization


class _Block(layers.Layer):
    """Config shared by the encoder and decoder blocks."""

    def __init__(self, num_heads, mlp_dim, dropout=0.0, attention_dropout=0.0,
                 activation="gelu", norm_first=True, layer_norm_epsilon=1e-6,
                 use_bias=True, activation_dropout=None, drop_path_rate=0.0,
                 weight_init="keras", attention_bias=None, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation = activation
        self.norm_first = norm_first
        self.layer_norm_epsilon = layer_norm_epsilon
        self.use_bias = use_bias
        self.activation_dropout = activation_dropout
        self.drop_path_rate = drop_path_rate
        self.weight_init = weight_init
        # biases on the attention projections (None: as use_bias, the MLP's);
        # tensor2tensor's attention has none, its feed-forward has them
        self.attention_bias = use_bias if attention_bias is None else attention_bias
        self.drop_path = DropPath(drop_path_rate, dtype=self.dtype_policy)

    def _norm(self, name):
        return LayerNormalization(epsilon=self.layer_norm_epsilon, name=name,
                                  dtype=self.dtype_policy)

    def _attention(self, name):
        return MultiHeadAttention(self.num_heads, dropout=self.attention_dropout,
                                  use_bias=self.attention_bias,
                                  weight_init=self.weight_init, name=name, dtype=self.dtype_policy)

    def _mlp(self):
        return FeedForward(self.mlp_dim, activation=self.activation, dropout=self.dropout,
                           activation_dropout=self.activation_dropout,
                           weight_init=self.weight_init, name="mlp", dtype=self.dtype_policy)

    def _residual(self, x, norm, sublayer, training=None):
        """Pre-LN: x + f(LN(x)). Post-LN (the paper): LN(x + f(x)). ``sublayer``
        returns (output, aux); aux (a cache) is passed through. f's output goes
        through stochastic depth (``drop_path_rate``; timm / DINO ``Block``)."""
        if self.norm_first:
            h, aux = sublayer(norm(x))
            return x + self.drop_path(h, training=training), aux
        h, aux = sublayer(x)
        return norm(x + self.drop_path(h, training=training)), aux

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, mlp_dim=self.mlp_dim,
                      dropout=self.dropout, attention_dropout=self.attention_dropout,
                      activation=self.activation, norm_first=self.norm_first,
                      layer_norm_epsilon=self.layer_norm_epsilon,
                      use_bias=self.use_bias, activation_dropout=self.activation_dropout,
                      drop_path_rate=self.drop_path_rate, weight_init=self.weight_init,
                      attention_bias=self.attention_bias)
        return config


@keras.saving.register_keras_serializable(package="keras_zoo")
class TransformerEncoderBlock(_Block):
    """Self-attention + feed-forward, each wrapped in a residual connection.

    ``norm_first=True`` (pre-LN, ViT / GPT-2):  x + Attn(LN(x)), then x + FFN(LN(x)).
    ``norm_first=False`` (post-LN, the 2017 paper): LN(x + Attn(x)), then LN(x + FFN(x)).
    Pre-LN keeps an identity path from input to output, which is why deep
    pre-LN stacks train without learning-rate warm-up tricks.

    Args:
        num_heads: attention heads. mlp_dim: feed-forward hidden width.
        dropout: on the residual branches. attention_dropout: on attention weights.
        activation_dropout: after the feed-forward activation (default: ``dropout``).
        activation: feed-forward activation ("gelu" in ViT, "relu" in 2017).
        layer_norm_epsilon: 1e-6 as in ViT.
        use_bias: biases on the feed-forward (and, by default, attention)
            projections. attention_bias: on the attention projections alone
            (None: ``use_bias``; False in tensor2tensor's Transformer).

    With ``use_causal_mask=True`` and a ``cache`` (``attention.init_cache``)
    this is GPT's block decoding one step at a time: ``call`` then returns
    ``(x, new_cache)``.

    The norms are ``keras_zoo.layers.normalization.LayerNormalization``:
    Keras' numbers and weights, lowered to ops that int8 TFLite kernels take.
    """

    def build(self, input_shape):
        self.attention_norm = self._norm("attention_norm")
        self.attention = self._attention("attention")
        self.attention_dropout_layer = layers.Dropout(self.dropout)
        self.mlp_norm = self._norm("mlp_norm")
        self.mlp = self._mlp()
        for sub in (self.attention_norm, self.attention, self.mlp_norm, self.mlp,
                    self.drop_path):
            sub.build(input_shape)

    def call(self, x, attention_mask=None, use_causal_mask=False, training=None,
             cache=None, cache_index=None):
        def attend(h):
            out = self.attention(h, attention_mask=attention_mask,
                                 use_causal_mask=use_causal_mask, training=training,
                                 cache=cache, cache_index=cache_index)
            h, new_cache = out if cache is not None else (out, None)
            return self.attention_dropout_layer(h, training=training), new_cache

        x, new_cache = self._residual(x, self.attention_norm, attend, training)
        x, _ = self._residual(x, self.mlp_norm,
                              lambda h: (self.mlp(h, training=training), None), training)
        return x if cache is None else (x, new_cache)


@keras.saving.register_keras_serializable(package="keras_zoo")
class TransformerDecoderBlock(_Block):
    """The 2017 decoder layer: causal self-attention, cross-attention to the
    encoder output ("memory"), feed-forward; each sub-layer with dropout on
    its output and a residual connection, post-LN as in the paper
    (``norm_first=False``, default here) or pre-LN.

    Call args:
        x: (batch, target_len, dim). memory: (batch, source_len, dim).
        memory_mask: (batch, source_len) boolean, False on source padding.
        self_attention_mask: optional (batch, target_len) padding mask.
        cache, cache_index: self-attention cache (``init_cache``) for
            incremental decoding; cross_cache: the memory's projected
            keys/values (``cross_attention_cache(memory)``), computed once.
            With a cache the call returns ``(x, new_cache)``.
    """

    def __init__(self, num_heads, mlp_dim, dropout=0.0, attention_dropout=0.0,
                 activation="relu", norm_first=False, layer_norm_epsilon=1e-6,
                 use_bias=True, activation_dropout=None, **kwargs):
        super().__init__(num_heads, mlp_dim, dropout, attention_dropout, activation,
                         norm_first, layer_norm_epsilon, use_bias, activation_dropout,
                         **kwargs)

    def build(self, x_shape, memory_shape=None):
        memory_shape = memory_shape or x_shape
        self.self_attention_norm = self._norm("self_attention_norm")
        self.self_attention = self._attention("self_attention")
        self.cross_attention_norm = self._norm("cross_attention_norm")
        self.cross_attention = self._attention("cross_attention")
        self.mlp_norm = self._norm("mlp_norm")
        self.mlp = self._mlp()
        self.residual_dropout = layers.Dropout(self.dropout)
        for sub in (self.self_attention_norm, self.cross_attention_norm, self.mlp_norm,
                    self.self_attention, self.mlp, self.drop_path):
            sub.build(x_shape)
        self.cross_attention.build(x_shape, memory_shape)

    def call(self, x, memory=None, memory_mask=None, self_attention_mask=None,
             training=None, cache=None, cache_index=None, cross_cache=None):
        def self_attend(h):
            out = self.self_attention(h, attention_mask=self_attention_mask,
                                      use_causal_mask=True, training=training,
                                      cache=cache, cache_index=cache_index)
            h, new_cache = out if cache is not None else (out, None)
            return self.residual_dropout(h, training=training), new_cache

        def cross_attend(h):
            if cross_cache is not None:
                h, _ = self.cross_attention(h, attention_mask=memory_mask,
                                            training=training, cache=cross_cache)
            else:
                h = self.cross_attention(h, memory, attention_mask=memory_mask,
                                         training=training)
            return self.residual_dropout(h, training=training), None

        x, new_cache = self._residual(x, self.self_attention_norm, self_attend, training)
        x, _ = self._residual(x, self.cross_attention_norm, cross_attend, training)
        x, _ = self._residual(x, self.mlp_norm,
                              lambda h: (self.mlp(h, training=training), None), training)
        return x if cache is None else (x, new_cache)
