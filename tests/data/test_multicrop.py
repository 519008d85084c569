"""DINO multi-crop in tf.data: shapes, crop geometry, and DataAugmentationDINO's
photometric ops with torchvision's numbers (main_dino.py, utils.py)."""

import colorsys

import numpy as np
import pytest
import tensorflow as tf

from keras_zoo.data import augment
from keras_zoo.data.multicrop import MultiCrop

# Every photometric op off: what is left is the crop.
PLAIN = {"flip_probability": 0.0, "color_jitter_probability": 0.0,
         "grayscale_probability": 0.0, "blur_probability": (0.0, 0.0, 0.0),
         "solarization_probability": 0.0}


def _examples(mc, images):
    """Per-example map then batch, as the trainer does."""
    ds = tf.data.Dataset.from_tensor_slices((images, np.arange(len(images)))).map(mc)
    return [(views, labels.numpy()) for views, labels in ds.batch(len(images))]


def _global_views(mc, image, count):
    """``count`` first global views of one image (one example each)."""
    ds = tf.data.Dataset.from_tensors(image).repeat(count).map(lambda x: mc.views(x))
    return np.stack([v["global_crops"].numpy()[0] for v in ds])


def test_views_have_the_configured_static_shapes():
    rng = np.random.default_rng(0)
    grey = rng.random((3, 40, 40, 1)).astype("float32")
    mc = MultiCrop(global_crop_size=32, local_crop_size=16, num_local_crops=5, seed=0)
    (views, labels), = _examples(mc, grey)
    assert views["global_crops"].shape == (3, 2, 32, 32, 1)
    assert views["local_crops"].shape == (3, 5, 16, 16, 1)
    np.testing.assert_array_equal(labels, [0, 1, 2])  # labels pass through untouched
    for crops in views.values():
        assert 0.0 <= float(tf.reduce_min(crops)) and float(tf.reduce_max(crops)) <= 1.0
    # Static shapes in the dataset's signature, as XLA needs, from images of any size.
    ragged = tf.data.Dataset.from_generator(
        lambda: iter([(np.zeros((50, 70, 3), "uint8"), 0), (np.zeros((90, 40, 3), "uint8"), 1)]),
        output_signature=(tf.TensorSpec((None, None, 3), tf.uint8), tf.TensorSpec((), tf.int32)))
    ds = ragged.map(MultiCrop(32, 16, 5, num_channels=1, seed=0)).batch(2)
    assert ds.element_spec[0]["local_crops"].shape == (None, 5, 16, 16, 1)
    views, _ = next(iter(ds))
    assert views["global_crops"].shape == (2, 2, 32, 32, 1)
    colour = rng.random((2, 32, 32, 3)).astype("float32")
    (views, _), = _examples(MultiCrop(24, 8, 0, seed=1), colour)
    assert set(views) == {"global_crops"}  # no local crops configured
    assert views["global_crops"].shape == (2, 2, 24, 24, 3)
    # A batch is accepted too, each image cut on its own.
    batch = MultiCrop(24, 8, 2, seed=1).views(colour)
    assert batch["local_crops"].shape == (2, 2, 8, 8, 3)


def test_views_are_random_per_view_and_per_example():
    images = np.random.default_rng(0).random((4, 32, 32, 1)).astype("float32")
    mc = MultiCrop(32, 16, 2, seed=0)
    (first, _), = _examples(mc, images)
    (second, _), = _examples(mc, images)
    g = first["global_crops"].numpy()
    assert not np.allclose(g[:, 0], g[:, 1])
    assert not np.allclose(g, second["global_crops"].numpy())


def test_crops_are_cut_from_the_original_image_at_its_own_aspect():
    # A 100 x 200 image whose value is its column's share of the width: a view's
    # value span is the share of the width it covers. A crop of 1/4 of the area
    # with aspect ratio r in [3/4, 4/3] *in original pixels* spans
    # sqrt(0.25 * 100 * 200 * r) / 200 = 0.35 sqrt(r) of the width: 0.31-0.41.
    # Had the image been squashed to a square first, the span would be 0.43-0.58.
    ramp = np.tile(np.linspace(0.0, 1.0, 200, dtype="float32"), (100, 1))[..., None]
    mc = MultiCrop(32, 16, 0, global_crops_scale=(0.25, 0.25), seed=3, **PLAIN)
    views = _global_views(mc, ramp, 40)
    spans = views.max(axis=(1, 2, 3)) - views.min(axis=(1, 2, 3))
    assert spans.min() > 0.29 and spans.max() < 0.43, (spans.min(), spans.max())
    # Crops are taken at the original resolution: from a 16 x 16 image a crop
    # of the whole area comes back as the image itself (bicubic at scale 1).
    small = np.random.default_rng(0).random((16, 16, 1)).astype("float32")
    whole = MultiCrop(16, 8, 0, global_crops_scale=(1.0, 1.0), seed=0, **PLAIN)
    np.testing.assert_allclose(_global_views(whole, small, 1)[0], small, atol=1e-6)


def test_random_resized_crop_follows_torchvision_get_params():
    rng = tf.random.Generator.from_seed(0)
    boxes = np.array([[int(v) for v in augment.crop_box(120, 90, (0.08, 1.0), (3 / 4, 4 / 3), rng)]
                      for _ in range(300)])
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 120).all() and (left + w <= 90).all()
    area = h * w / (120 * 90)
    assert area.min() > 0.07 and area.max() <= 1.0
    ratio = w / h
    assert ratio.min() > 0.7 and ratio.max() < 1.4  # log-uniform in [3/4, 4/3], rounded
    # No box fits (every area share > 1 at this aspect range): torchvision's
    # central fallback, the whole image clamped to the ratio range.
    t, l_, h1, w1 = (int(v) for v in augment.crop_box(40, 200, (1.0, 1.0), (3 / 4, 4 / 3), rng))
    assert (h1, w1) == (40, round(40 * 4 / 3)) and t == 0 and l_ == (200 - w1) // 2


def test_colour_jitter_has_torchvision_ranges_on_known_pixels():
    # ColorJitter(0.4, 0.4, 0.2, 0.1), one factor at a time, 300 draws each.
    def jittered(image, jitter, count=300):
        mc = MultiCrop(8, 4, 0, global_crops_scale=(1.0, 1.0), seed=7,
                       **{**PLAIN, "color_jitter_probability": 1.0, "color_jitter": jitter})
        return _global_views(mc, image, count)

    grey = np.full((8, 8, 3), 0.5, "float32")
    # Brightness multiplies: mid-grey lands in 0.5 * [0.6, 1.4] = [0.3, 0.7].
    b = jittered(grey, (0.4, 0.0, 0.0, 0.0))[:, 0, 0, 0]
    assert b.min() >= 0.3 - 1e-6 and b.max() <= 0.7 + 1e-6
    assert b.min() < 0.32 and b.max() > 0.68
    # Contrast blends with the mean of the grey image: two levels 0.2 / 0.6
    # (mean 0.4) go to 0.4 -+ c * 0.2 with c in [0.6, 1.4].
    two = np.full((8, 8, 3), 0.2, "float32")
    two[:, 4:] = 0.6
    c = jittered(two, (0.0, 0.4, 0.0, 0.0))
    hi, lo = c[:, 0, 7, 0], c[:, 0, 0, 0]
    np.testing.assert_allclose((hi + lo) / 2, 0.4, atol=1e-4)  # the mean stays (luma sums to 0.9999)
    factor = (hi - lo) / 0.4
    assert factor.min() >= 0.6 - 1e-5 and factor.max() <= 1.4 + 1e-5
    assert factor.min() < 0.65 and factor.max() > 1.35
    # Saturation blends with the grey image (luma 0.2989 R + 0.587 G + 0.114 B)
    # by s in [0.8, 1.2]: red 0.6 of (0.6, 0.4, 0.4) stays in luma + s * 0.14.
    pink = np.tile(np.array([0.6, 0.4, 0.4], "float32"), (8, 8, 1))
    luma = 0.2989 * 0.6 + 0.587 * 0.4 + 0.114 * 0.4
    s = (jittered(pink, (0.0, 0.0, 0.2, 0.0))[:, 0, 0, 0] - luma) / (0.6 - luma)
    assert s.min() >= 0.8 - 1e-4 and s.max() <= 1.2 + 1e-4
    assert s.min() < 0.83 and s.max() > 1.17
    # Hue rotates by up to +-0.1 of the circle.
    colour = np.tile(np.array([0.8, 0.3, 0.2], "float32"), (8, 8, 1))
    h0 = colorsys.rgb_to_hsv(*colour[0, 0])[0]
    shift = np.array([(colorsys.rgb_to_hsv(*p)[0] - h0 + 0.5) % 1.0 - 0.5
                      for p in jittered(colour, (0.0, 0.0, 0.0, 0.1))[:, 0, 0]])
    assert np.abs(shift).max() <= 0.1 + 1e-3
    assert shift.min() < -0.09 and shift.max() > 0.09


def test_colour_jitter_applies_its_ops_in_a_random_order():
    # Two grey levels 0 and 1, brightness and contrast only. Brightness first
    # keeps lo + hi <= 1 (the brightened 1 is clipped, then contrast is
    # symmetric about the new mean); contrast first then brightness b > 1
    # gives lo + hi = b > 1. A per-image random order shows both.
    two = np.zeros((8, 8, 1), "float32")
    two[:, 4:] = 1.0
    mc = MultiCrop(8, 4, 0, global_crops_scale=(1.0, 1.0), seed=11,
                   **{**PLAIN, "color_jitter_probability": 1.0,
                      "color_jitter": (0.4, 0.4, 0.0, 0.0)})
    views = _global_views(mc, two, 400)
    total = views[:, 0, 0, 0] + views[:, 0, 7, 0]
    assert (total > 1.05).sum() > 10                                # contrast, then brightness
    assert ((np.abs(total - 1.0) < 1e-5) & (views[:, 0, 0, 0] > 0.05)).sum() > 10  # the other


def test_grayscale_and_solarization_probabilities():
    colour = np.tile(np.array([0.8, 0.3, 0.2], "float32"), (8, 8, 1))
    mc = MultiCrop(8, 4, 0, global_crops_scale=(1.0, 1.0), seed=5,
                   **{**PLAIN, "grayscale_probability": 0.2})
    views = _global_views(mc, colour, 400)
    grey = np.isclose(views[:, 0, 0, 0], views[:, 0, 0, 1])
    assert 0.13 < grey.mean() < 0.27
    np.testing.assert_allclose(views[grey][:, 0, 0, 0], 0.2989 * 0.8 + 0.587 * 0.3 + 0.114 * 0.2,
                               atol=1e-3)
    # Solarization: PIL's threshold 128 of 255, second global view only (p 0.2).
    x = np.array([0.0, 0.2, 0.5, 127.5 / 255, 128 / 255, 0.8, 1.0], "float32")
    np.testing.assert_allclose(augment.solarize(x), [0.0, 0.2, 0.5, 127.5 / 255, 127 / 255,
                                                     0.2, 0.0], atol=1e-6)
    bright = np.full((8, 8, 1), 0.9, "float32")
    sol = MultiCrop(8, 4, 0, global_crops_scale=(1.0, 1.0), seed=5,
                    **{**PLAIN, "solarization_probability": 0.2})
    ds = tf.data.Dataset.from_tensors(bright).repeat(400).map(lambda x: sol.views(x))
    both = np.stack([v["global_crops"].numpy()[:, 0, 0, 0] for v in ds])
    np.testing.assert_allclose(both[:, 0], 0.9)                # first view: never
    assert 0.13 < np.isclose(both[:, 1], 0.1).mean() < 0.27   # second view: p 0.2


def test_gaussian_blur_is_isotropic_with_one_sigma_per_image():
    # Impulses through the first global view (blur p 1.0): each image's blur
    # is a Gaussian with the same variance along both axes, and the variances
    # differ between images (sigma drawn per image from [0.1, 2]).
    impulse = np.zeros((16, 33, 33, 1), "float32")
    impulse[:, 16, 16] = 1.0
    mc = MultiCrop(33, 9, 0, global_crops_scale=(1.0, 1.0), seed=2,
                   **{**PLAIN, "blur_probability": (1.0, 0.0, 0.0)})
    (views, _), = _examples(mc, impulse)
    out = views["global_crops"].numpy()[:, 0, ..., 0]
    r = np.arange(33) - 16
    var_rows = (out.sum(axis=2) * r ** 2).sum(axis=1)
    var_cols = (out.sum(axis=1) * r ** 2).sum(axis=1)
    np.testing.assert_allclose(var_rows, var_cols, rtol=1e-4, atol=1e-6)
    assert var_rows.max() <= 2.0 ** 2 + 1e-3 and np.std(np.sqrt(var_rows)) > 0.2


def test_gaussian_blur_kernel_does_not_truncate_sigma_two():
    # sigma = 2 px: the blurred impulse has variance 4 (a 9-tap kernel, +-2 sigma,
    # would give ~2.8). At 96 px (DINO's local crops) as at any size.
    impulse = np.zeros((96, 96, 1), "float32")
    impulse[48, 48] = 1.0
    out = augment.blur(impulse, 2.0).numpy()[..., 0]
    r = np.arange(96) - 48
    assert out.sum() == pytest.approx(1.0, abs=1e-5)
    assert (out.sum(axis=1) * r ** 2).sum() == pytest.approx(4.0, abs=5e-3)
    # Through MultiCrop's 96 px local views (blur p 1 here): with the kernel
    # reaching +-8 px, an impulse's blur shows 6 px away (a 9-tap kernel, +-4,
    # leaves exactly 0 there) once some image draws sigma above ~1.4.
    mc = MultiCrop(96, 96, 1, local_crops_scale=(1.0, 1.0), seed=4,
                   **{**PLAIN, "blur_probability": (0.0, 0.0, 1.0)})
    ds = tf.data.Dataset.from_tensors(impulse).repeat(32).map(lambda x: mc.views(x))
    six_px_away = [float(v["local_crops"].numpy()[0, ..., 0].sum(axis=0)[48 + 6]) for v in ds]
    assert max(six_px_away) > 1e-5


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match=r"local_crops_scale must be \(low, high\)"):
        MultiCrop(32, 16, local_crops_scale=(0.5, 0.1))
    with pytest.raises(ValueError, match="num_local_crops must be an integer >= 0, got -1"):
        MultiCrop(32, 16, num_local_crops=-1)
    with pytest.raises(ValueError, match=r"expects an image \(H, W, C\) or a batch"):
        MultiCrop(8, 4).views(np.zeros((32, 32), "float32"))
    with pytest.raises(ValueError, match="color_jitter must be"):
        MultiCrop(8, 4, color_jitter=(0.4, 0.4))
