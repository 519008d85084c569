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


def _conv3x3_same(x, kernel):
    """Stride-1 3x3 convolution with one pixel of zero padding, in numpy."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, w = x.shape[1:3]
    return sum(np.einsum("bhwc,cf->bhwf", padded[:, i:i + h, j:j + w], kernel[i, j])
               for i in range(3) for j in range(3))


def _bn_inference(x, bn):
    gamma, beta, mean, var = (np.asarray(v) for v in
                              (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
    return gamma * (x - mean) / np.sqrt(var + bn.epsilon) + beta


def test_basic_block_identity_shortcut():
    """Shapes match, so the input itself is added: relu(F(x) + x), F = conv-BN-ReLU-conv-BN
    (the paper's Fig. 2), computed in numpy from the block's weights."""
    block = BasicBlock(8)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 4, 8)).astype("float32")
    block(x)
    for bn in block.bns:  # BN statistics away from the identity, so each one shows
        bn.gamma.assign(rng.uniform(0.5, 1.5, 8))
        bn.beta.assign(rng.normal(0, 0.3, 8))
        bn.moving_mean.assign(rng.normal(0, 0.3, 8))
        bn.moving_variance.assign(rng.uniform(0.5, 2.0, 8))
    assert block.projection is None
    k1, k2 = (np.asarray(conv.kernel) for conv in block.convs)
    branch = np.maximum(_bn_inference(_conv3x3_same(x, k1), block.bns[0]), 0)
    branch = _bn_inference(_conv3x3_same(branch, k2), block.bns[1])
    np.testing.assert_allclose(np.asarray(block(x, training=False)),
                               np.maximum(branch + x, 0), atol=1e-5)


def test_zero_init_residual_makes_block_identity_plus_relu():
    block = BasicBlock(8, zero_init_residual=True)
    x = np.random.default_rng(1).normal(size=(1, 4, 4, 8)).astype("float32")
    np.testing.assert_allclose(np.asarray(block(x, training=False)), np.maximum(x, 0), atol=1e-6)
