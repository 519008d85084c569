"""Per-image augmentations with torchvision's semantics, in tf.data.

The self-supervised recipes (DINO, MAE) are defined by their official
PyTorch code, which augments one decoded PIL image at a time with
torchvision. These functions do the same on one (H, W, C) float image in
[0, 1] at its own resolution (C = 1 or 3), drawing their random numbers from
a ``tf.random.Generator``:

- ``random_resized_crop``: ``transforms.RandomResizedCrop`` (area share and
  log-uniform aspect ratio, 10 tries, central-crop fallback), cut from the
  image at its own size and resized once, bicubic with antialiasing as PIL
  resizes; the output has a static shape;
- ``color_jitter``: ``transforms.ColorJitter(b, c, s, h)``: multiplicative
  brightness, contrast around the mean of the grey image, saturation as a
  blend with the grey image, a hue rotation of up to +-h of the circle, in a
  random order per image, clamped to [0, 1] after each;
- ``grayscale``: ``RandomGrayscale`` (ITU-R 601 luma, kept at C channels);
- ``gaussian_blur``: DINO's ``utils.GaussianBlur``: an isotropic Gaussian
  whose sigma is drawn per image from [0.1, 2.0] px;
- ``solarize``: PIL's ``ImageOps.solarize`` (pixels >= 128/255 inverted).
"""

import math

from keras_zoo.backend import tf

# PIL works on 8-bit levels: ImageOps.solarize(threshold=128) inverts i >= 128.
SOLARIZE_THRESHOLD = 128.0 / 255.0
# Kernel half-width in sigmas: 4 (scipy's default truncate) keeps all but 6e-5
# of the mass; at the largest sigma, 2 px, that is a 17-tap kernel.
_BLUR_TRUNCATE = 4.0


def _generator(rng):
    return rng if rng is not None else tf.random.get_global_generator()


def crop_box(height, width, scale, ratio, rng):
    """torchvision ``RandomResizedCrop.get_params``: (top, left, h, w) in pixels.

    Ten candidate boxes of ``scale`` times the image area and a log-uniform
    aspect ratio in ``ratio``; the first that fits wins, else a central crop
    of the image clamped to ``ratio``. All ten are drawn at once (branch-free).
    """
    h_img = tf.cast(height, tf.float32)
    w_img = tf.cast(width, tf.float32)
    area = h_img * w_img * rng.uniform((10,), scale[0], scale[1])
    aspect = tf.exp(rng.uniform((10,), math.log(ratio[0]), math.log(ratio[1])))
    w = tf.round(tf.sqrt(area * aspect))
    h = tf.round(tf.sqrt(area / aspect))
    fits = (w > 0) & (w <= w_img) & (h > 0) & (h <= h_img)
    first = tf.argmax(tf.cast(fits, tf.int32))
    in_ratio = w_img / h_img
    fallback_w = tf.where(in_ratio < ratio[0], w_img,
                          tf.where(in_ratio > ratio[1], tf.round(h_img * ratio[1]), w_img))
    fallback_h = tf.where(in_ratio < ratio[0], tf.round(w_img / ratio[0]), h_img)
    ok = tf.reduce_any(fits)
    h = tf.cast(tf.where(ok, h[first], fallback_h), tf.int32)
    w = tf.cast(tf.where(ok, w[first], fallback_w), tf.int32)
    # randint(0, H - h + 1) per side; the fallback is centred.
    top = tf.where(ok, tf.cast(tf.floor(rng.uniform(()) * tf.cast(height - h + 1, tf.float32)),
                               tf.int32), (height - h) // 2)
    left = tf.where(ok, tf.cast(tf.floor(rng.uniform(()) * tf.cast(width - w + 1, tf.float32)),
                                tf.int32), (width - w) // 2)
    return top, left, h, w


def random_resized_crop(image, size, scale, rng=None, ratio=(3.0 / 4.0, 4.0 / 3.0)):
    """One (H, W, C) image -> a (size, size, C) crop of ``scale`` of its area,
    cut at the image's own resolution, resized bicubically with antialiasing
    (PIL's ``Image.BICUBIC`` resize, which torchvision calls)."""
    rng = _generator(rng)
    image = tf.convert_to_tensor(image, tf.float32)
    shape = tf.shape(image)
    top, left, h, w = crop_box(shape[0], shape[1], scale, ratio, rng)
    crop = tf.slice(image, tf.stack([top, left, 0]), tf.stack([h, w, shape[2]]))
    out = tf.image.resize(crop, (size, size), method="bicubic", antialias=True)
    # PIL's 8-bit result cannot over- or undershoot; bicubic weights can.
    return tf.ensure_shape(tf.clip_by_value(out, 0.0, 1.0), (size, size, image.shape[-1]))


def random_apply(fn, image, probability, rng=None):
    """``fn(image)`` with ``probability``, else ``image`` (torchvision RandomApply)."""
    if probability <= 0.0:
        return image
    if probability >= 1.0:
        return fn(image)
    return tf.cond(_generator(rng).uniform(()) < probability, lambda: fn(image), lambda: image)


def horizontal_flip(image, probability=0.5, rng=None):
    """``RandomHorizontalFlip(p)``."""
    return random_apply(lambda x: tf.reverse(x, axis=[1]), image, probability, rng)


def _grey(image):
    # rgb_to_grayscale: 0.2989 R + 0.587 G + 0.114 B (PIL's "L" conversion).
    return tf.image.rgb_to_grayscale(image) if image.shape[-1] == 3 else image


def adjust_brightness(image, factor):
    """torchvision ``adjust_brightness``: blend with black, i.e. ``x * factor``."""
    return tf.clip_by_value(image * factor, 0.0, 1.0)


def adjust_contrast(image, factor):
    """torchvision ``adjust_contrast``: blend with the mean of the grey image."""
    mean = tf.reduce_mean(_grey(image))
    return tf.clip_by_value(mean + factor * (image - mean), 0.0, 1.0)


def adjust_saturation(image, factor):
    """torchvision ``adjust_saturation``: blend with the grey image (a no-op on grey)."""
    if image.shape[-1] != 3:
        return image
    grey = _grey(image)
    return tf.clip_by_value(grey + factor * (image - grey), 0.0, 1.0)


def adjust_hue(image, delta):
    """torchvision ``adjust_hue``: rotate the hue by ``delta`` of the full circle
    (``delta`` in [-0.5, 0.5]; a no-op on grey)."""
    if image.shape[-1] != 3:
        return image
    return tf.clip_by_value(tf.image.adjust_hue(image, delta), 0.0, 1.0)


def color_jitter(image, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, rng=None):
    """torchvision ``ColorJitter(brightness, contrast, saturation, hue)``.

    Factors: brightness and contrast uniform in [1 - b, 1 + b], saturation in
    [1 - s, 1 + s], hue shift uniform in [-h, h] (a share of the hue circle);
    the four ops run in a random order per image (``torch.randperm(4)``).
    """
    rng = _generator(rng)
    b = rng.uniform((), max(0.0, 1.0 - brightness), 1.0 + brightness)
    c = rng.uniform((), max(0.0, 1.0 - contrast), 1.0 + contrast)
    s = rng.uniform((), max(0.0, 1.0 - saturation), 1.0 + saturation)
    h = rng.uniform((), -hue, hue)
    order = tf.argsort(rng.uniform((4,)))  # a uniform random permutation
    ops = [lambda x: adjust_brightness(x, b), lambda x: adjust_contrast(x, c),
           lambda x: adjust_saturation(x, s), lambda x: adjust_hue(x, h)]
    for i in range(4):
        image = tf.ensure_shape(
            tf.switch_case(order[i], [lambda f=f, x=image: f(x) for f in ops]), image.shape)
    return image


def grayscale(image, probability=0.2, rng=None):
    """``RandomGrayscale(p)``: the luma image, kept at the input's channels."""
    if image.shape[-1] != 3:
        return image
    return random_apply(lambda x: tf.tile(_grey(x), [1, 1, 3]), image, probability, rng)


def blur(image, sigma, max_sigma=2.0):
    """Gaussian blur of one (H, W, C) image with an isotropic ``sigma`` (px).

    The kernel spans +-4 ``max_sigma`` (17 taps at 2 px), so no sigma up to
    ``max_sigma`` is truncated; borders repeat the edge pixels, as PIL's
    ``GaussianBlur`` does.
    """
    radius = math.ceil(_BLUR_TRUNCATE * max_sigma)
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * tf.square(x / sigma))
    kernel = kernel / tf.reduce_sum(kernel)

    def along(image, axis):
        n = tf.shape(image)[axis]
        index = tf.clip_by_value(tf.range(-radius, n + radius), 0, n - 1)
        padded = tf.gather(image, index, axis=axis)
        # Channels to the batch axis, so one (K, 1, 1, 1) filter does every channel.
        lines = tf.transpose(padded, (2, 0, 1))[..., None]
        taps = tf.reshape(kernel, (-1, 1, 1, 1) if axis == 0 else (1, -1, 1, 1))
        out = tf.nn.conv2d(lines, taps, strides=1, padding="VALID")
        return tf.transpose(out[..., 0], (1, 2, 0))

    return tf.ensure_shape(along(along(image, 0), 1), image.shape)


def gaussian_blur(image, probability, rng=None, sigma=(0.1, 2.0)):
    """DINO's ``utils.GaussianBlur(p, radius_min=0.1, radius_max=2.0)``: with
    ``probability``, blur with a sigma drawn uniformly from ``sigma`` for this image."""
    rng = _generator(rng)
    return random_apply(lambda x: blur(x, rng.uniform((), sigma[0], sigma[1]), sigma[1]),
                        image, probability, rng)


def solarize(image, threshold=SOLARIZE_THRESHOLD):
    """Inverts the pixels at or above ``threshold`` (PIL ``ImageOps.solarize``)."""
    return tf.where(image < threshold, image, 1.0 - image)


def to_unit_float(image):
    """uint8 0..255 or float 0..1 -> float32 0..1."""
    if image.dtype == tf.uint8:
        return tf.cast(image, tf.float32) / 255.0
    return tf.cast(image, tf.float32)


def match_channels(image, channels):
    """1 <-> 3 channels, as the model's input wants."""
    have = image.shape[-1]
    if have == channels:
        return image
    if have == 1 and channels == 3:
        return tf.image.grayscale_to_rgb(image)
    if have == 3 and channels == 1:
        return tf.image.rgb_to_grayscale(image)
    raise ValueError(f"cannot map {have}-channel images to {channels} channels")
