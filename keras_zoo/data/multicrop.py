"""DINO's multi-crop augmentation (Caron et al. 2021, Sec. 3.1 and Appendix D).

Each image yields 2 *global* views (random-resized crops covering a large share
of the image, at the model's resolution) and N *local* views (small crops at a
lower resolution). The teacher sees only the global views; the student sees
all of them, which teaches "local-to-global" correspondence.

Runs inside tf.data on whole batches: the crops of a batch are cut with one
vectorised ``tf.image.crop_and_resize``, so every view of a kind has one static
shape (global crops one size, local crops another) as XLA and TPUs require.
"""

import math

import keras

from keras_zoo.backend import tf


def random_resized_crop(images, size, scale, rng, ratio=(3.0 / 4.0, 4.0 / 3.0)):
    """Per image: a box covering ``scale`` of the area with aspect ratio in
    ``ratio`` (log-uniform), at a random position, resized to ``size`` x ``size``.

    torchvision retries up to 10 times to fit the box; here a box that would
    overflow is clipped to the image instead, which keeps the op branch-free.
    """
    n = tf.shape(images)[0]
    area = rng.uniform((n,), scale[0], scale[1])
    log_ratio = rng.uniform((n,), math.log(ratio[0]), math.log(ratio[1]))
    aspect = tf.exp(log_ratio)
    height = tf.minimum(tf.sqrt(area / aspect), 1.0)
    width = tf.minimum(tf.sqrt(area * aspect), 1.0)
    top = rng.uniform((n,)) * (1.0 - height)
    left = rng.uniform((n,)) * (1.0 - width)
    boxes = tf.stack([top, left, top + height, left + width], axis=1)
    return tf.image.crop_and_resize(images, boxes, tf.range(n), (size, size),
                                    method="bilinear")


def random_apply(fn, images, probability, rng):
    """``fn`` on each image with ``probability``, the identity otherwise."""
    if probability <= 0.0:
        return images
    if probability >= 1.0:
        return fn(images)
    keep = rng.uniform((tf.shape(images)[0], 1, 1, 1)) < probability
    return tf.where(keep, fn(images), images)


def _gaussian_blur(size, probability, seed):
    # SimCLR/DINO blur with sigma in [0.1, 2.0] px; the kernel spans ~10 % of
    # the crop (odd, at least 3).
    return keras.layers.RandomGaussianBlur(
        factor=(probability, probability), kernel_size=max(3, (size // 10) | 1),
        sigma=(0.1, 2.0), value_range=(0, 1), seed=seed)


def solarize(images, threshold=0.5):
    """Inverts the pixels above ``threshold`` (images in [0, 1]), as PIL does."""
    return tf.where(images < threshold, images, 1.0 - images)


class MultiCrop:
    """Maps a batch ``(images (B, H, W, C) in [0, 1], labels)`` to
    ``({"global_crops": (B, 2, G, G, C), "local_crops": (B, N, L, L, C)}, labels)``.

    Views stay on axis 1 so that a distribution strategy, which splits axis 0
    across replicas, hands each replica all the views of its own images.
    The paper's recipe: global crops cover ``(0.4, 1.0)`` of the image at 224 px,
    local crops ``(0.05, 0.4)`` at 96 px; horizontal flip (p 0.5), colour jitter
    (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1; p 0.8), grayscale
    (p 0.2), Gaussian blur (p 1.0 on the first global view, 0.1 on the second,
    0.5 on local views), solarization (p 0.2, second global view only).
    Single-channel images get brightness and contrast jitter only.
    """

    def __init__(self, global_crop_size=224, local_crop_size=96, num_local_crops=8,
                 global_crops_scale=(0.4, 1.0), local_crops_scale=(0.05, 0.4),
                 flip_probability=0.5, color_jitter_probability=0.8,
                 color_jitter=(0.4, 0.4, 0.2, 0.1), grayscale_probability=0.2,
                 blur_probability=(1.0, 0.1, 0.5), solarization_probability=0.2,
                 seed=None):
        for name, size in (("global_crop_size", global_crop_size),
                           ("local_crop_size", local_crop_size)):
            if not isinstance(size, int) or size <= 0:
                raise ValueError(f"{name} must be a positive integer, got {size!r}")
        if not isinstance(num_local_crops, int) or num_local_crops < 0:
            raise ValueError(f"num_local_crops must be an integer >= 0, got {num_local_crops!r}")
        for name, (low, high) in (("global_crops_scale", global_crops_scale),
                                  ("local_crops_scale", local_crops_scale)):
            if not 0.0 < low <= high <= 1.0:
                raise ValueError(
                    f"{name} must be (low, high) with 0 < low <= high <= 1, got "
                    f"{(low, high)}")
        self.global_crop_size = global_crop_size
        self.local_crop_size = local_crop_size
        self.num_local_crops = num_local_crops
        self.global_crops_scale = tuple(global_crops_scale)
        self.local_crops_scale = tuple(local_crops_scale)
        self.flip_probability = flip_probability
        self.color_jitter_probability = color_jitter_probability
        self.color_jitter = tuple(color_jitter)
        self.grayscale_probability = grayscale_probability
        self.blur_probability = tuple(blur_probability)
        self.solarization_probability = solarization_probability
        self._seed = seed
        self._generator = None  # a tf.random.Generator, made on first use (see _rng)
        seeds = [None] * 6 if seed is None else [seed + i for i in range(1, 7)]
        self._flip = keras.layers.RandomFlip("horizontal", seed=seeds[0])
        self._grayscale = keras.layers.RandomGrayscale(grayscale_probability, seed=seeds[1])
        brightness, contrast, saturation, hue = self.color_jitter
        # Keras' jitter factors are offsets around "unchanged"; torchvision's
        # ColorJitter(0.4, ...) samples multipliers in [0.6, 1.4] — the same band.
        self._jitter_rgb = keras.layers.RandomColorJitter(
            value_range=(0, 1), brightness_factor=brightness, contrast_factor=contrast,
            saturation_factor=(max(0.5 - saturation / 2, 0.0), 0.5 + saturation / 2),
            hue_factor=hue, seed=seeds[2])
        self._jitter_grey = keras.layers.RandomColorJitter(
            value_range=(0, 1), brightness_factor=brightness, contrast_factor=contrast,
            seed=seeds[2])
        sizes = (global_crop_size, global_crop_size, local_crop_size)
        self._blurs = [_gaussian_blur(size, p, s) if p > 0 else None
                       for size, p, s in zip(sizes, self.blur_probability, seeds[3:])]

    @property
    def _rng(self):
        # Made on first use rather than in __init__, so that building a DINO
        # model (which validates its crop settings here) needs no TensorFlow;
        # init_scope: the first use is usually while tf.data traces the map.
        if self._generator is None:
            with tf.init_scope():
                self._generator = (
                    tf.random.Generator.from_seed(self._seed) if self._seed is not None
                    else tf.random.Generator.from_non_deterministic_state())
        return self._generator

    def _photometric(self, views, blur, solarization):
        """blur: a RandomGaussianBlur layer or None."""
        views = self._flip(views, training=True)
        jitter = self._jitter_rgb if views.shape[-1] == 3 else self._jitter_grey
        views = random_apply(lambda v: jitter(v, training=True), views,
                             self.color_jitter_probability, self._rng)
        if views.shape[-1] == 3:
            views = self._grayscale(views, training=True)
        if blur is not None:
            views = blur(views, training=True)
        views = random_apply(solarize, views, solarization, self._rng)
        return tf.clip_by_value(views, 0.0, 1.0)

    def check_image_size(self, height, width):
        """Crops are cut from the image: a crop larger than it is an error."""
        for name, size in (("global_crop_size", self.global_crop_size),
                           ("local_crop_size", self.local_crop_size)):
            if (height is not None and size > height) or (width is not None and size > width):
                raise ValueError(
                    f"{name}={size} is larger than the images ({height}x{width}); "
                    f"crops must fit inside the image: use a crop size <= "
                    f"{min(h for h in (height, width) if h is not None)} or larger images")

    def views(self, images):
        """(B, H, W, C) float images in [0, 1] -> dict of stacked views."""
        images = tf.convert_to_tensor(images, tf.float32)
        if images.shape.rank != 4:
            raise ValueError(f"MultiCrop expects a batch (B, H, W, C), got shape {images.shape}")
        self.check_image_size(images.shape[1], images.shape[2])
        blur = self._blurs
        global_views = [
            self._photometric(
                random_resized_crop(images, self.global_crop_size,
                                    self.global_crops_scale, self._rng),
                blur=blur[i], solarization=self.solarization_probability if i else 0.0)
            for i in range(2)]
        out = {"global_crops": tf.stack(global_views, axis=1)}
        if self.num_local_crops:
            local_views = [
                self._photometric(
                    random_resized_crop(images, self.local_crop_size,
                                        self.local_crops_scale, self._rng),
                    blur=blur[2], solarization=0.0)
                for _ in range(self.num_local_crops)]
            out["local_crops"] = tf.stack(local_views, axis=1)
        return out

    def __call__(self, images, labels=None):
        return self.views(images), labels
