import numpy as np
from keras import ops

from keras_zoo.layers import TransformerEncoderBlock


def _run_parts(block, x):
    ln1 = lambda t: ops.convert_to_numpy(block.attention_norm(t))  # noqa: E731
    ln2 = lambda t: ops.convert_to_numpy(block.mlp_norm(t))  # noqa: E731
    attn = lambda t: ops.convert_to_numpy(block.attention(t))  # noqa: E731
    mlp = lambda t: ops.convert_to_numpy(block.mlp(t))  # noqa: E731
    return ln1, ln2, attn, mlp


def test_pre_ln_order():
    x = np.random.default_rng(0).normal(size=(2, 4, 16)).astype("float32")
    block = TransformerEncoderBlock(num_heads=2, mlp_dim=32, norm_first=True)
    out = ops.convert_to_numpy(block(x))
    ln1, ln2, attn, mlp = _run_parts(block, x)
    h = x + attn(ln1(x))
    np.testing.assert_allclose(out, h + mlp(ln2(h)), atol=1e-5)


def test_post_ln_order():
    x = np.random.default_rng(1).normal(size=(2, 4, 16)).astype("float32")
    block = TransformerEncoderBlock(num_heads=2, mlp_dim=32, norm_first=False,
                                    activation="relu")
    out = ops.convert_to_numpy(block(x))
    ln1, ln2, attn, mlp = _run_parts(block, x)
    h = ln1(x + attn(x))
    np.testing.assert_allclose(out, ln2(h + mlp(h)), atol=1e-5)
    # Post-LN output is normalised per token; pre-LN output is not.
    np.testing.assert_allclose(out.mean(-1), 0.0, atol=1e-4)


def test_pre_and_post_differ():
    x = np.random.default_rng(2).normal(size=(1, 3, 8)).astype("float32")
    pre = TransformerEncoderBlock(num_heads=2, mlp_dim=16, norm_first=True)
    post = TransformerEncoderBlock(num_heads=2, mlp_dim=16, norm_first=False)
    pre(x), post(x)
    post.set_weights(pre.get_weights())
    assert np.abs(ops.convert_to_numpy(pre(x)) - ops.convert_to_numpy(post(x))).max() > 1e-2


def test_config_round_trip():
    block = TransformerEncoderBlock(num_heads=2, mlp_dim=16, norm_first=False, dropout=0.1)
    clone = TransformerEncoderBlock.from_config(block.get_config())
    assert clone.get_config() == block.get_config()


def _decoder_parts_by_hand(block, x, memory):
    """The 2017 decoder layer, post-LN, recomputed from the block's sub-layers."""
    np_ = ops.convert_to_numpy
    h = np_(block.self_attention_norm(x + block.self_attention(x, use_causal_mask=True)))
    h = np_(block.cross_attention_norm(h + block.cross_attention(h, memory)))
    return np_(block.mlp_norm(h + block.mlp(h)))


def test_decoder_block_is_the_papers_post_ln_layer():
    from keras_zoo.layers import TransformerDecoderBlock

    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 5, 16)).astype("float32")
    memory = rng.normal(size=(2, 7, 16)).astype("float32")
    block = TransformerDecoderBlock(num_heads=2, mlp_dim=32)
    out = ops.convert_to_numpy(block(x, memory))
    np.testing.assert_allclose(out, _decoder_parts_by_hand(block, x, memory), atol=1e-5)


def test_decoder_block_reads_the_memory_and_blocks_the_future():
    from keras_zoo.layers import TransformerDecoderBlock

    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 6, 16)).astype("float32")
    memory = rng.normal(size=(1, 4, 16)).astype("float32")
    block = TransformerDecoderBlock(num_heads=2, mlp_dim=32, norm_first=True)
    out = ops.convert_to_numpy(block(x, memory))
    later = x.copy()
    later[:, 4:] += 1.0
    changed = ops.convert_to_numpy(block(later, memory))
    np.testing.assert_allclose(changed[:, :4], out[:, :4], atol=1e-6)
    assert np.abs(changed[:, 4:] - out[:, 4:]).max() > 1e-3
    other_memory = ops.convert_to_numpy(block(x, memory + 1.0))
    assert np.abs(other_memory - out).max() > 1e-3
    # A masked-out source position changes nothing.
    mask = np.array([[1, 1, 1, 0]], bool)
    edited = memory.copy()
    edited[:, 3] = 5.0
    np.testing.assert_allclose(
        ops.convert_to_numpy(block(x, edited, memory_mask=mask)),
        ops.convert_to_numpy(block(x, memory, memory_mask=mask)), atol=1e-6)


def test_decoder_block_cached_steps_equal_the_full_pass():
    from keras_zoo.layers import TransformerDecoderBlock

    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 6, 16)).astype("float32")
    memory = rng.normal(size=(2, 5, 16)).astype("float32")
    block = TransformerDecoderBlock(num_heads=4, mlp_dim=32)
    full = ops.convert_to_numpy(block(x, memory))
    cache = block.self_attention.init_cache(2, 8)
    cross = block.cross_attention.cross_attention_cache(memory)
    steps = []
    for t in range(6):
        out, cache = block(x[:, t:t + 1], cache=cache, cache_index=t, cross_cache=cross)
        steps.append(ops.convert_to_numpy(out))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def test_encoder_block_with_cache_is_gpts_incremental_step():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1, 5, 16)).astype("float32")
    block = TransformerEncoderBlock(num_heads=2, mlp_dim=32, norm_first=True)
    full = ops.convert_to_numpy(block(x, use_causal_mask=True))
    cache = block.attention.init_cache(1, 5)
    first, cache = block(x[:, :2], use_causal_mask=True, cache=cache, cache_index=0)
    rest = []
    for t in range(2, 5):
        out, cache = block(x[:, t:t + 1], use_causal_mask=True, cache=cache, cache_index=t)
        rest.append(ops.convert_to_numpy(out))
    np.testing.assert_allclose(
        np.concatenate([ops.convert_to_numpy(first)] + rest, axis=1), full, atol=1e-5)
