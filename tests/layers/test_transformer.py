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
