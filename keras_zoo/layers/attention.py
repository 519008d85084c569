"""Multi-head attention (Vaswani et al. 2017, "Attention Is All You Need")."""

import keras
from keras import layers, ops

from keras_zoo import config
from keras_zoo.layers.initializers import initializer


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
        weight_init: initialisation scheme of ``keras_zoo.layers.initializers``
            ("keras": glorot_uniform over each fused kernel; "big_vision":
            xavier with the fans of q, k and v as separate (D, D) matrices).

    Call args:
        query: (batch, q_len, dim). value: optional (batch, kv_len, dim).
        attention_mask: boolean, True = may attend; (batch, kv_len) padding
            mask, or (batch, q_len, kv_len), or (batch, heads, q_len, kv_len).
        use_causal_mask: position i attends only to positions <= i.
        cache, cache_index: incremental decoding (see ``init_cache``). For
            self-attention, ``cache`` is (batch, 2, heads, max_len, head_dim):
            the keys/values of this call's ``q_len`` positions are written at
            ``cache_index`` and the queries attend to cache positions
            ``< cache_index + q_len`` (and causally when asked); the call
            returns ``(output, new_cache)``. A pair ``(keys, values)`` of
            (batch, heads, max_len, head_dim) caches works the same and comes
            back as a pair (LiteRT-LM's per-layer ``kv_cache_k/v`` tensors). One decoding step therefore
            costs O(current length), not a recomputation of the prefix. For
            cross-attention, ``cache`` holds the projected keys/values of the
            memory (``cross_attention_cache(memory)``), computed once per
            source sentence and passed instead of ``value``; the call then
            returns ``(output, cache)`` too, for a uniform interface.

    ``keras_zoo.config.set_attention_implementation`` picks the lowering:
    two matmuls (CPU, TensorFlow, TFLite) or the backend's fused
    ``keras.ops.dot_product_attention`` (default on JAX GPU/TPU); same
    weights, same numbers.
    """

    def __init__(self, num_heads, dropout=0.0, use_bias=True, weight_init="keras", **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.dropout = dropout
        self.use_bias = use_bias
        self.weight_init = weight_init
        initializer(weight_init, "attention_kernel")  # an unknown scheme fails here
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
            units, use_bias=self.use_bias, dtype=self.dtype_policy, name=name,
            kernel_initializer=initializer(
                self.weight_init, "attention_kernel", parts=units // dim),
            bias_initializer=initializer(self.weight_init, "attention_bias"),
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

    def _split_heads(self, x, parts):
        # (B, T, parts * H * D) -> `parts` tensors of (B, H, T, D), heads-first
        # so the two attention products are plain batched matmuls. One
        # reshape + one transpose for all parts, then one split on the head
        # axis (not `parts` strided slices: without XLA each slice's gradient
        # is a zero-padded full-size tensor, and an unstack lowers to TFLite
        # UNPACK, which XNNPACK does not delegate; SPLIT it does).
        b, t = ops.shape(x)[0], ops.shape(x)[1]
        x = ops.reshape(x, (b, t, parts * self.num_heads, self.head_dim))
        x = ops.transpose(x, (0, 2, 1, 3))
        return ops.split(x, parts, axis=1) if parts > 1 else [x]

    def call(
        self,
        query,
        value=None,
        attention_mask=None,
        use_causal_mask=False,
        training=None,
        cache=None,
        cache_index=None,
    ):
        if self.is_cross_attention:
            if cache is not None:
                k, v = cache[:, 0], cache[:, 1]
            elif value is None:
                raise ValueError("this attention layer was built for cross-attention: "
                                 "pass value= (the memory) or a cross-attention cache")
            else:
                k, v = self._split_heads(self.kv(value), 2)
            (q,) = self._split_heads(self.q(query), 1)
            mask = self._combine_masks(
                attention_mask, use_causal_mask, ops.shape(q)[2], ops.shape(k)[2])
        elif cache is not None:
            if cache_index is None:
                raise ValueError("a self-attention cache needs cache_index (the position "
                                 "of the first query token)")
            q, k, v = self._split_heads(self.qkv(query), 3)
            index = ops.cast(cache_index, "int32")
            zero = ops.zeros((), "int32")
            if isinstance(cache, (tuple, list)):  # separate key and value caches
                k, v = (ops.slice_update(c, (zero, zero, index, zero), ops.cast(t, c.dtype))
                        for c, t in zip(cache, (k, v)))
                cache = (k, v)
            else:
                cache = ops.slice_update(
                    cache, (zero, zero, zero, index, zero),
                    ops.cast(ops.stack([k, v], axis=1), cache.dtype))
                k, v = cache[:, 0], cache[:, 1]
            mask = self._cache_mask(attention_mask, use_causal_mask, index,
                                    ops.shape(q)[2], ops.shape(k)[2])
        else:
            q, k, v = self._split_heads(self.qkv(query), 3)
            mask = self._combine_masks(
                attention_mask, use_causal_mask, ops.shape(q)[2], ops.shape(k)[2])
        if config.use_fused_attention() and not (self.dropout > 0 and training):
            # Plain causal self-attention: the kernel's own causal rule (flash
            # attention then skips the blocks above the diagonal).
            causal_only = use_causal_mask and attention_mask is None and cache is None \
                and not self.is_cross_attention
            context = self._attend_fused(q, k, v, None if causal_only else mask, causal_only)
        else:
            context = self._attend(q, k, v, mask, training)  # (B, H, T, D)
        b, t = ops.shape(context)[0], ops.shape(context)[2]
        context = ops.transpose(context, (0, 2, 1, 3))
        context = ops.reshape(context, (b, t, self.num_heads * self.head_dim))
        output = self.out(context)
        return output if cache is None else (output, cache)

    # ---- incremental decoding

    def init_cache(self, batch_size, max_length, dtype=None):
        """An empty self-attention cache: zeros of (batch, 2, heads, max_length, head_dim)."""
        return ops.zeros((batch_size, 2, self.num_heads, max_length, self.head_dim),
                         dtype=dtype or self.compute_dtype)

    def cross_attention_cache(self, memory):
        """Projected keys/values of ``memory`` (batch, kv_len, dim) for a
        cross-attention layer: (batch, 2, heads, kv_len, head_dim). Computed
        once per source, reused at every decoding step."""
        if not self.is_cross_attention:
            raise ValueError("cross_attention_cache is for a cross-attention layer")
        k, v = self._split_heads(self.kv(memory), 2)
        return ops.stack([k, v], axis=1)

    @staticmethod
    def _cache_mask(attention_mask, use_causal_mask, index, q_len, max_len):
        """(B|1, 1, q, max_len) boolean: cache slots filled so far (and the past
        of each query when causal), and'ed with a (B, max_len) padding mask."""
        j = ops.arange(max_len, dtype="int32")[None, :]
        i = ops.arange(q_len, dtype="int32")[:, None]
        # Without the causal rule every query sees all slots written so far.
        limit = index + i if use_causal_mask else index + q_len - 1 + 0 * i
        mask = (j <= limit)[None, None]
        if attention_mask is not None:
            padding = ops.cast(attention_mask, "bool")
            if len(padding.shape) == 2:
                padding = padding[:, None, None, :]
            elif len(padding.shape) == 3:
                padding = padding[:, None, :, :]
            mask = ops.logical_and(mask, padding)
        return mask

    @staticmethod
    def _attend_fused(q, k, v, mask, is_causal):
        """``keras.ops.dot_product_attention`` on (B, H, T, D) tensors: the
        backend's fused kernel (cuDNN / Pallas flash attention on JAX GPU/TPU).
        It has no attention dropout, so training with dropout uses ``_attend``.
        The op takes (B, T, H, D); under XLA the transposes in and out cancel
        the ones around this call."""
        def swap(t):
            return ops.transpose(t, (0, 2, 1, 3))

        context = ops.dot_product_attention(swap(q), swap(k), swap(v), mask=mask,
                                            is_causal=is_causal)
        return swap(context)

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
            num_heads=self.num_heads, dropout=self.dropout, use_bias=self.use_bias,
            weight_init=self.weight_init,
        )
        return config


def causal_mask(q_len, kv_len):
    """(q_len, kv_len) boolean: query i may see keys j <= i + (kv_len - q_len)."""
    i = ops.arange(q_len)[:, None]
    j = ops.arange(kv_len)[None, :]
    return j <= i + (kv_len - q_len)
