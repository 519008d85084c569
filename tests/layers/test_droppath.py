"""Stochastic depth: DropPath, the linear rule over depth, its place in the block."""

import keras
import numpy as np
import pytest

import keras_zoo
from keras_zoo.layers.droppath import DropPath, drop_path_rates
from keras_zoo.layers.transformer import TransformerEncoderBlock


def test_drop_path_drops_whole_samples_and_keeps_the_expectation():
    x = np.ones((4000, 3, 5), "float32")
    layer = DropPath(0.25, seed=0)
    np.testing.assert_array_equal(np.asarray(layer(x)), x)  # inference: identity
    out = np.asarray(layer(x, training=True))
    per_sample = out.reshape(4000, -1)
    # Each sample is all 0 or all 1 / 0.75.
    assert set(np.unique(per_sample.min(axis=1))) <= {0.0, np.float32(1 / 0.75)}
    np.testing.assert_array_equal(per_sample.min(axis=1), per_sample.max(axis=1))
    dropped = (per_sample[:, 0] == 0).mean()
    assert dropped == pytest.approx(0.25, abs=0.03)
    assert out.mean() == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match=r"rate must be a number in \[0, 1\), got 1"):
        DropPath(1)


def test_linear_rule_over_depth():
    # torch.linspace(0, 0.1, 12), as DeiT/timm/DINO compute the block rates.
    np.testing.assert_allclose(drop_path_rates(0.1, 12), np.linspace(0, 0.1, 12), rtol=1e-12)
    assert drop_path_rates(0.3, 1) == [0.0]
    vit = keras_zoo.ViT(image_size=32, patch_size=8, num_channels=1, hidden_dim=32,
                        num_layers=3, num_heads=2, mlp_dim=64, drop_path_rate=0.2)
    rates = [vit.get_layer(f"encoder_block_{i}").drop_path_rate for i in range(3)]
    np.testing.assert_allclose(rates, [0.0, 0.1, 0.2])
    with pytest.raises(ValueError, match="drop_path_rate must be a number in"):
        keras_zoo.ViT(drop_path_rate=-0.1)


def test_block_drops_both_residual_branches_per_sample():
    block = TransformerEncoderBlock(2, 16, drop_path_rate=0.9)
    x = np.random.default_rng(0).normal(size=(256, 5, 8)).astype("float32")
    plain = np.asarray(block(x))
    again = TransformerEncoderBlock.from_config(block.get_config())
    again.build(x.shape)
    again.set_weights(block.get_weights())
    np.testing.assert_allclose(np.asarray(again(x)), plain, rtol=1e-6, atol=1e-6)
    out = np.asarray(block(x, training=True))
    identity = np.all(np.isclose(out, x, atol=1e-6), axis=(1, 2))
    # Both branches dropped with probability 0.9^2 = 0.81: the sample passes unchanged.
    assert identity.mean() == pytest.approx(0.81, abs=0.08)
    assert not np.allclose(out[~identity], x[~identity])
    assert keras.ops.convert_to_numpy(block(x, training=False)).shape == x.shape
