"""Multi-head attention (Vaswani et al. 2017, "Attention Is All You Need")."""

import keras
from keras import layers, ops

from keras_zoo import config


@keras.saving.register_keras_serializable(package="keras_zoo")
class MultiHeadAttention(layers.Layer):
    """Multi-head scaled dot-product attention, softmax(QK^T / sqrt(d)) V.

    Self-attention (``value=None``) projects queries, keys and values with one
    fused ``qkv`` matmul (one kernel instead of three: fewer launches, better
    matmul utilisation). Cross-attention (``value`` given, e.g. a decoder
    attending to an encoder) projects the query with ``q`` and keys/values with
    one fused ``kv`` matmul. Which one a layer is gets fixed by its first call.

    Args:
        num_heads: number of heads; ``hidden_dim`` must divide by it.
        dropout: dropout on the attention probabilities (training only).
        use_bias: bias on the projections (True in ViT/BERT).

    Call args:
        query: (batch, q_len, dim). value: optional (batch, kv_len, dim).
        attention_mask: boolean, True = may attend; (batch, kv_len) padding
            mask, or (batch, q_len, kv_len), or (batch, heads, q_len, kv_len).
        use_causal_mask: position i attends only to positions <= i.

    ``keras_zoo.config.set_attention_implementation`` picks the lowering:
    two matmuls (CPU, TensorFlow, TFLite) or the backend's fused
    ``keras.ops.dot_product_attention`` (default on JAX GPU/TPU); same
    weights, same numbers.
    """

    def __init__(self, num_heads, dropout=0.0, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.dropout = dropout
        self.use_bias = use_bias
        self._attention_dropout = layers.Dropout(dropout)

    def build(self, query_shape, value_shape=None):
        dim = query_shape[-1]
        if dim % self.num_heads:
            raise ValueError(
                f"hidden size {dim} is not divisible by num_heads={self.num_heads}"
            )
        self.head_dim = dim // self.num_heads
        self.is_cross_attention = value_shape is not None
        dense = lambda units, name: layers.Dense(
            units, use_bias=self.use_bias, dtype=self.dtype_policy, name=name
        )
        if self.is_cross_attention:
            self.q = dense(dim, "q")
            self.q.build(query_shape)
            self.kv = dense(2 * dim, "kv")
            self.kv.build(value_shape)
        else:
            self.qkv = dense(3 * dim, "qkv")
            self.qkv.build(query_shape)
        self.out = dense(dim, "out")
        self.out.build(query_shape)

    def _split_heads(self, x, parts, heads_first=True):
        # (B, T, parts * H * D) -> `parts` tensors of (B, H, T, D), heads-first
        # so the two attention products are plain batched matmuls. One
        # reshape + one transpose for all parts, then one split on the head
        # axis (not `parts` strided slices: without XLA each slice's gradient
        # is a zero-padded full-size tensor, and an unstack lowers to TFLite
        # UNPACK, which XNNPACK does not delegate; SPLIT it does).
        # heads_first=False: (B, T, H, D), the fused op's layout, no transpose.
        b, t = ops.shape(x)[0], ops.shape(x)[1]
        x = ops.reshape(x, (b, t, parts * self.num_heads, self.head_dim))
        if not heads_first:
            return ops.split(x, parts, axis=2) if parts > 1 else [x]
        x = ops.transpose(x, (0, 2, 1, 3))
        return ops.split(x, parts, axis=1) if parts > 1 else [x]

    def call(
        self,
        query,
        value=None,
        attention_mask=None,
        use_causal_mask=False,
        training=None,
    ):
        # The fused op has no attention dropout: training with it uses matmuls.
        fused = config.use_fused_attention() and not (self.dropout > 0 and training)
        if self.is_cross_attention:
            if value is None:
                raise ValueError("this attention layer was built for cross-attention")
            (q,) = self._split_heads(self.q(query), 1, heads_first=not fused)
            k, v = self._split_heads(self.kv(value), 2, heads_first=not fused)
        else:
            q, k, v = self._split_heads(self.qkv(query), 3, heads_first=not fused)
        q_len, kv_len = (ops.shape(q)[1], ops.shape(k)[1]) if fused else \
            (ops.shape(q)[2], ops.shape(k)[2])
        if fused and use_causal_mask and attention_mask is None and \
                q.shape[1] is not None and q.shape[1] == k.shape[1]:
            # Square causal attention: the kernel's own mask (flash skips the
            # blocks above the diagonal).
            context = ops.dot_product_attention(q, k, v, is_causal=True)
        elif fused:
            mask = self._combine_masks(attention_mask, use_causal_mask, q_len, kv_len)
            context = ops.dot_product_attention(q, k, v, mask=mask)  # (B, T, H, D)
        else:
            mask = self._combine_masks(attention_mask, use_causal_mask, q_len, kv_len)
            context = self._attend(q, k, v, mask, training)  # (B, H, T, D)
            context = ops.transpose(context, (0, 2, 1, 3))
        b, t = ops.shape(context)[0], ops.shape(context)[1]
        context = ops.reshape(context, (b, t, self.num_heads * self.head_dim))
        return self.out(context)

    def _attend(self, q, k, v, mask, training):
        """softmax(q k^T / sqrt(d)) v on (B, H, T, D) tensors.

        Written as two batched matmuls rather than ``ops.dot_product_attention``:
        on the TensorFlow backend that op is two einsums over (B, T, H, D),
        each with its own transposes in and out; this form runs the ViT-S/16
        attention's forward + backward in ~1.4x less CPU time without XLA
        (``python -m benchmarks.speedups``); under XLA (TPU) both compile to
        the same dots. The scale goes on q
        (T x D numbers) rather than on the T x T scores.
        """
        q = q * ops.cast(self.head_dim**-0.5, q.dtype)
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2)))
        # Mask and softmax in float32 under mixed precision, like Keras.
        scores = ops.cast(scores, "float32")
        if mask is not None:
            # Large but finite: a fully masked row gives a uniform softmax, not NaN.
            scores = ops.where(mask, scores, -1e9)
        probs = ops.cast(ops.softmax(scores, axis=-1), v.dtype)
        if self.dropout > 0 and training:
            probs = self._attention_dropout(probs, training=training)
        return ops.matmul(probs, v)

    @staticmethod
    def _combine_masks(attention_mask, use_causal_mask, q_len, kv_len):
        """Returns a boolean mask broadcastable to (batch, heads, q, kv) or None."""
        mask = None
        if attention_mask is not None:
            mask = ops.cast(attention_mask, "bool")
            if len(mask.shape) == 2:  # (B, kv) padding mask
                mask = mask[:, None, None, :]
            elif len(mask.shape) == 3:  # (B, q, kv)
                mask = mask[:, None, :, :]
        if use_causal_mask:
            causal = causal_mask(q_len, kv_len)[None, None, :, :]
            mask = causal if mask is None else ops.logical_and(mask, causal)
        return mask

    def compute_output_shape(self, query_shape, value_shape=None):
        return query_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads, dropout=self.dropout, use_bias=self.use_bias
        )
        return config


def causal_mask(q_len, kv_len):
    """(q_len, kv_len) boolean: query i may see keys j <= i + (kv_len - q_len)."""
    i = ops.arange(q_len)[:, None]
    j = ops.arange(kv_len)[None, :]
    return j <= i + (kv_len - q_len)
