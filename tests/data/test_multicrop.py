"""DINO multi-crop augmentation in tf.data: shapes, crop geometry, errors."""

import numpy as np
import pytest
import tensorflow as tf

from keras_zoo.data.multicrop import MultiCrop, random_resized_crop, solarize


def _batches(mc, images, count=1):
    ds = tf.data.Dataset.from_tensors((images, np.arange(len(images)))).repeat(count).map(mc)
    return [(views, labels.numpy()) for views, labels in ds]


def test_views_have_the_configured_static_shapes():
    rng = np.random.default_rng(0)
    grey = rng.random((3, 40, 40, 1)).astype("float32")
    mc = MultiCrop(global_crop_size=32, local_crop_size=16, num_local_crops=5, seed=0)
    (views, labels), = _batches(mc, grey)
    assert views["global_crops"].shape == (3, 2, 32, 32, 1)
    assert views["local_crops"].shape == (3, 5, 16, 16, 1)
    np.testing.assert_array_equal(labels, [0, 1, 2])  # labels pass through untouched
    for crops in views.values():
        assert 0.0 <= float(tf.reduce_min(crops)) and float(tf.reduce_max(crops)) <= 1.0
    # Static shapes in the dataset's signature, as XLA needs.
    ds = tf.data.Dataset.from_tensors((grey, np.arange(3))).map(mc)
    assert ds.element_spec[0]["local_crops"].shape == (3, 5, 16, 16, 1)
    colour = rng.random((2, 32, 32, 3)).astype("float32")
    (views, _), = _batches(MultiCrop(24, 8, 0, seed=1), colour)
    assert set(views) == {"global_crops"}  # no local crops configured
    assert views["global_crops"].shape == (2, 2, 24, 24, 3)


def test_views_are_random_per_view_and_per_batch():
    images = np.random.default_rng(0).random((4, 32, 32, 1)).astype("float32")
    (first, _), (second, _) = _batches(MultiCrop(32, 16, 2, seed=0), images, count=2)
    g = first["global_crops"].numpy()
    assert not np.allclose(g[:, 0], g[:, 1])
    assert not np.allclose(g, second["global_crops"].numpy())


def test_random_resized_crop_geometry():
    rng = tf.random.Generator.from_seed(0)
    # Values equal the column position in [0, 1], so a crop's value range is
    # its width as a share of the image.
    ramp = np.tile(np.linspace(0.0, 1.0, 33, dtype="float32"), (4, 33, 1))[..., None]
    whole = random_resized_crop(ramp, 33, (1.0, 1.0), rng, ratio=(1.0, 1.0))
    np.testing.assert_allclose(whole, ramp, atol=1e-6)  # the whole image, unchanged
    quarter = random_resized_crop(ramp, 16, (0.25, 0.25), rng, ratio=(1.0, 1.0)).numpy()
    spans = quarter.max(axis=(1, 2, 3)) - quarter.min(axis=(1, 2, 3))
    np.testing.assert_allclose(spans, 0.5, atol=1e-5)  # a quarter of the area: half the width
    assert quarter.shape == (4, 16, 16, 1)


def test_solarize_inverts_bright_pixels_only():
    x = np.array([0.0, 0.2, 0.49, 0.5, 0.8, 1.0], "float32")
    np.testing.assert_allclose(solarize(x), [0.0, 0.2, 0.49, 0.5, 0.2, 0.0], atol=1e-7)


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match=r"global_crop_size=64 is larger than the images "
                                         r"\(32x32\)"):
        MultiCrop(64, 16).views(np.zeros((2, 32, 32, 1), "float32"))
    with pytest.raises(ValueError, match=r"local_crops_scale must be \(low, high\)"):
        MultiCrop(32, 16, local_crops_scale=(0.5, 0.1))
    with pytest.raises(ValueError, match="num_local_crops must be an integer >= 0, got -1"):
        MultiCrop(32, 16, num_local_crops=-1)
    with pytest.raises(ValueError, match=r"expects a batch \(B, H, W, C\)"):
        MultiCrop(8, 4).views(np.zeros((32, 32, 1), "float32"))
