import numpy as np
import pytest
from keras import ops

from keras_zoo.layers import MultiHeadAttention, causal_mask


def _by_hand(layer, x, mask=None):
    """softmax(Q K^T / sqrt(d)) V per head, in numpy, from the layer's own weights."""
    w, b = [np.asarray(v) for v in layer.qkv.weights]
    wo, bo = [np.asarray(v) for v in layer.out.weights]
    qkv = x @ w + b
    batch, t, dim = x.shape
    h, d = layer.num_heads, dim // layer.num_heads
    q, k, v = (qkv[..., i * dim:(i + 1) * dim].reshape(batch, t, h, d) for i in range(3))
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    context = np.einsum("bhqk,bkhd->bqhd", probs, v).reshape(batch, t, dim)
    return context @ wo + bo


def test_attention_matches_formula():
    x = np.random.default_rng(0).normal(size=(2, 5, 16)).astype("float32")
    layer = MultiHeadAttention(num_heads=4)
    out = ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(out, _by_hand(layer, x), atol=1e-5)


def test_causal_mask_blocks_the_future():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 6, 16)).astype("float32")
    layer = MultiHeadAttention(num_heads=2)
    out = ops.convert_to_numpy(layer(x, use_causal_mask=True))
    tri = np.tril(np.ones((6, 6), bool))[None, None]
    np.testing.assert_allclose(out, _by_hand(layer, x, tri), atol=1e-5)
    # Changing token 4 must not change outputs at positions 0..3.
    x2 = x.copy()
    x2[0, 4] += 10.0
    out2 = ops.convert_to_numpy(layer(x2, use_causal_mask=True))
    np.testing.assert_allclose(out2[0, :4], out[0, :4], atol=1e-6)
    assert np.abs(out2[0, 4] - out[0, 4]).max() > 1e-3


def test_padding_mask_ignores_padded_keys():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 5, 8)).astype("float32")
    pad = np.array([[True, True, True, False, False]])
    layer = MultiHeadAttention(num_heads=2)
    out = ops.convert_to_numpy(layer(x, attention_mask=pad))
    x2 = x.copy()
    x2[0, 3:] = rng.normal(size=(2, 8))
    out2 = ops.convert_to_numpy(layer(x2, attention_mask=pad))
    np.testing.assert_allclose(out2[0, :3], out[0, :3], atol=1e-6)


def _cross_by_hand(layer, x, memory, mask=None):
    """softmax(Q K^T / sqrt(d)) V with Q from ``x`` and K, V from ``memory``, in numpy."""
    wq, bq = [np.asarray(v) for v in layer.q.weights]
    wkv, bkv = [np.asarray(v) for v in layer.kv.weights]
    wo, bo = [np.asarray(v) for v in layer.out.weights]
    batch, t, dim = x.shape
    s = memory.shape[1]
    h, d = layer.num_heads, dim // layer.num_heads
    q = (x @ wq + bq).reshape(batch, t, h, d)
    kv = memory @ wkv + bkv
    k, v = (kv[..., i * dim:(i + 1) * dim].reshape(batch, s, h, d) for i in range(2))
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d)
    if mask is not None:
        scores = np.where(mask[:, None, None, :], scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    context = np.einsum("bhqk,bkhd->bqhd", probs, v).reshape(batch, t, dim)
    return context @ wo + bo


def test_cross_attention_reads_keys_and_values_from_the_memory():
    """Queries from one sequence, keys/values from another of other length and
    content: the numpy formula, with a padding mask on the memory."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3, 8)).astype("float32")
    memory = rng.normal(loc=0.5, scale=2.0, size=(2, 7, 8)).astype("float32")
    layer = MultiHeadAttention(num_heads=2)
    out = ops.convert_to_numpy(layer(x, memory))
    assert layer.is_cross_attention and out.shape == (2, 3, 8)
    np.testing.assert_allclose(out, _cross_by_hand(layer, x, memory), atol=1e-5)
    pad = np.array([[True] * 7, [True] * 4 + [False] * 3])
    masked = ops.convert_to_numpy(layer(x, memory, attention_mask=pad))
    np.testing.assert_allclose(masked, _cross_by_hand(layer, x, memory, pad), atol=1e-5)
    with pytest.raises(ValueError, match="cross-attention"):
        layer(x)


def test_causal_mask_shape_for_cached_decoding():
    m = ops.convert_to_numpy(causal_mask(2, 5))
    np.testing.assert_array_equal(m, [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match="not divisible by num_heads=3"):
        MultiHeadAttention(num_heads=3)(np.zeros((1, 2, 8), "float32"))


def test_self_attention_cache_equals_recomputing_the_prefix():
    """Prefill 3 tokens, then decode 4 one at a time: same outputs as the full causal pass."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 7, 16)).astype("float32")
    layer = MultiHeadAttention(num_heads=4)
    full = ops.convert_to_numpy(layer(x, use_causal_mask=True))
    cache = layer.init_cache(batch_size=2, max_length=9)
    out, cache = layer(x[:, :3], use_causal_mask=True, cache=cache, cache_index=0)
    steps = [ops.convert_to_numpy(out)]
    for t in range(3, 7):
        out, cache = layer(x[:, t:t + 1], use_causal_mask=True, cache=cache, cache_index=t)
        steps.append(ops.convert_to_numpy(out))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)
    # The cache holds exactly the keys/values of the 7 positions, zeros after.
    cache = ops.convert_to_numpy(cache)
    assert np.abs(cache[:, :, :, 7:]).max() == 0
    assert np.abs(cache[:, :, :, :7]).sum(axis=(0, 1, 2, 4)).min() > 0


def test_cross_attention_cache_equals_projecting_the_memory():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 3, 16)).astype("float32")
    memory = rng.normal(size=(2, 5, 16)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    layer = MultiHeadAttention(num_heads=2)
    direct = ops.convert_to_numpy(layer(x, memory, attention_mask=mask))
    cached, _ = layer(x, attention_mask=mask, cache=layer.cross_attention_cache(memory))
    np.testing.assert_allclose(ops.convert_to_numpy(cached), direct, atol=1e-6)


def test_self_attention_cache_needs_an_index():
    layer = MultiHeadAttention(num_heads=2)
    x = np.zeros((1, 1, 8), "float32")
    layer(x)
    with pytest.raises(ValueError, match="cache_index"):
        layer(x, cache=layer.init_cache(1, 4))
