import numpy as np
import pytest
from keras import ops

from keras_zoo.layers import (
    ClassToken,
    LearnedPositionEmbedding,
    PatchEmbedding,
    SinusoidalPositionEmbedding,
    sincos_2d,
    sinusoidal_1d,
)


def test_patch_embedding_is_a_linear_map_of_each_patch():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    layer = PatchEmbedding(patch_size=4, hidden_dim=5)
    out = ops.convert_to_numpy(layer(images))
    assert out.shape == (2, 4, 5)
    kernel, bias = [np.asarray(w) for w in layer.weights]
    # Patch (row 1, col 0) is token 2, flattened in (h, w, c) order.
    patch = images[:, 4:8, 0:4, :].reshape(2, -1)
    np.testing.assert_allclose(out[:, 2], patch @ kernel.reshape(-1, 5) + bias, atol=1e-5)


def test_patch_size_must_divide_image():
    with pytest.raises(ValueError, match="not divisible by patch_size=16"):
        PatchEmbedding(16, 8)(np.zeros((1, 40, 40, 3), "float32"))


def test_class_token_prepends_one_learned_vector():
    x = np.ones((3, 4, 6), "float32")
    layer = ClassToken()
    out = ops.convert_to_numpy(layer(x))
    assert out.shape == (3, 5, 6)
    np.testing.assert_allclose(out[:, 0], np.broadcast_to(np.asarray(layer.token)[0], (3, 6)))
    np.testing.assert_allclose(out[:, 1:], x)


def test_position_resampling_keeps_prefix_and_grid():
    layer = LearnedPositionEmbedding(num_prefix_tokens=1)
    layer(np.zeros((1, 1 + 16, 8), "float32"))
    old = np.asarray(layer.embedding)
    new = layer.resample(old, (1, 1 + 64, 8))
    assert new.shape == (1, 65, 8)
    np.testing.assert_allclose(new[:, 0], old[:, 0])
    # A constant grid stays constant under bicubic resampling.
    const = np.concatenate([old[:, :1], np.full((1, 16, 8), 0.5, "float32")], 1)
    np.testing.assert_allclose(layer.resample(const, (1, 65, 8))[:, 1:], 0.5, atol=1e-5)
    with pytest.raises(ValueError, match="square"):
        layer.resample(old, (1, 1 + 15, 8))


def test_sinusoidal_tables_follow_the_formulas():
    table = sinusoidal_1d(10, 8)
    pos, i = 3, 1
    np.testing.assert_allclose(table[pos, 2 * i], np.sin(pos / 10000 ** (2 * i / 8)), rtol=1e-6)
    np.testing.assert_allclose(table[pos, 2 * i + 1], np.cos(pos / 10000 ** (2 * i / 8)), rtol=1e-6)
    grid = sincos_2d(4, 16)
    assert grid.shape == (16, 16)
    # Tokens in one row share the row half of the code; columns share the other half.
    np.testing.assert_allclose(grid[0, 8:], grid[3, 8:])
    np.testing.assert_allclose(grid[0, :8], grid[4, :8])
    layer = SinusoidalPositionEmbedding(grid=True, num_prefix_tokens=1)
    out = ops.convert_to_numpy(layer(np.zeros((1, 17, 16), "float32")))
    np.testing.assert_allclose(out[0, 0], 0.0)
    np.testing.assert_allclose(out[0, 1:], grid)


def test_token_embedding_reverse_is_the_tied_output_layer():
    from keras_zoo.layers import TokenEmbedding

    layer = TokenEmbedding(11, 4)
    ids = np.array([[3, 0, 10]])
    vectors = ops.convert_to_numpy(layer(ids))
    table = np.asarray(layer.embeddings)
    np.testing.assert_array_equal(vectors[0], table[[3, 0, 10]])
    logits = ops.convert_to_numpy(layer(vectors, reverse=True))
    assert logits.shape == (1, 3, 11) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, vectors @ table.T, rtol=1e-5, atol=1e-6)
    assert len(layer.weights) == 1


def test_position_embedding_adds_rows_from_an_offset():
    from keras_zoo.layers import PositionEmbedding

    layer = PositionEmbedding(max_positions=10)
    x = np.zeros((2, 3, 4), "float32")
    full = ops.convert_to_numpy(layer(x))
    table = np.asarray(layer.embeddings)
    np.testing.assert_array_equal(full[1], table[:3])
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(x[:, :1] + 1, start_index=7))[0],
                                  table[7:8] + 1)
    assert PositionEmbedding.from_config(layer.get_config()).max_positions == 10
