import numpy as np

from keras_zoo.layers import BasicBlock, BottleneckBlock


def _params(layer):
    return sum(int(np.prod(w.shape)) for w in layer.trainable_weights)


def test_bottleneck_shapes_and_projection():
    block = BottleneckBlock(16, stride=2)
    out = block(np.zeros((2, 8, 8, 32), "float32"))
    assert tuple(out.shape) == (2, 4, 4, 64)
    assert block.projection is not None
    # 1x1 32->16, 3x3 16->16, 1x1 16->64, projection 32->64, no conv bias; BN gamma/beta.
    convs = 32 * 16 + 9 * 16 * 16 + 16 * 64 + 32 * 64
    bns = 2 * (16 + 16 + 64 + 64)
    assert _params(block) == convs + bns


def test_basic_block_identity_shortcut():
    # relu(x + F(x)) with F = bn2(conv2(relu(bn1(conv1(x))))) and the input
    # itself as the shortcut (no projection when shapes match).
    block = BasicBlock(8)
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 8)).astype("float32")
    out = np.asarray(block(x, training=False))
    assert block.projection is None
    h = x
    for i, (pad, conv, bn) in enumerate(zip(block.pads, block.convs, block.bns)):
        h = bn(conv(pad(h) if pad is not None else h), training=False)
        h = np.maximum(np.asarray(h), 0) if i == 0 else np.asarray(h)
    np.testing.assert_allclose(out, np.maximum(x + h, 0), rtol=1e-5, atol=1e-5)
    assert np.abs(out - np.maximum(h, 0)).max() > 0.1  # the shortcut carries x


def test_zero_init_residual_makes_block_identity_plus_relu():
    block = BasicBlock(8, zero_init_residual=True)
    x = np.random.default_rng(1).normal(size=(1, 4, 4, 8)).astype("float32")
    np.testing.assert_allclose(np.asarray(block(x, training=False)), np.maximum(x, 0), atol=1e-6)
