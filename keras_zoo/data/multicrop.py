"""DINO's multi-crop augmentation (Caron et al. 2021, Sec. 3.1 and Appendix D).

Each image yields 2 *global* views (random-resized crops covering a large share
of the image, at the model's resolution) and N *local* views (small crops at a
lower resolution). The teacher sees only the global views; the student sees
all of them, which teaches "local-to-global" correspondence.

As in the official ``DataAugmentationDINO`` (facebookresearch/dino
``main_dino.py``), the views are cut from each *decoded original image* at its
own resolution, before any resizing, and each is resized once to its crop
size. So the map runs per example, before batching; every view of a kind has
one static shape (global crops one size, local crops another), as XLA and
TPUs require. The photometric ops are torchvision's, per image
(``keras_zoo.data.augment``).
"""

from keras_zoo.backend import tf
from keras_zoo.data import augment


class MultiCrop:
    """Maps one example ``(image (H, W, C), label)`` at its own size, uint8 or
    float in [0, 1], to ``({"global_crops": (2, G, G, C'), "local_crops":
    (N, L, L, C')}, label)``; batching then stacks views on axis 1.

    Views stay on axis 1 so that a distribution strategy, which splits axis 0
    across replicas, hands each replica all the views of its own images.
    The paper's recipe (``DataAugmentationDINO``): global crops cover
    ``(0.4, 1.0)`` of the image at 224 px, local crops ``(0.05, 0.4)`` at
    96 px, bicubic; then per view: horizontal flip (p 0.5), colour jitter
    (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1; p 0.8),
    grayscale (p 0.2), Gaussian blur with sigma in [0.1, 2] px (p 1.0 on the
    first global view, 0.1 on the second, 0.5 on local views), solarization
    (p 0.2, second global view only). Single-channel images get brightness
    and contrast jitter only (saturation and hue are no-ops on grey, as in
    PIL). ``num_channels``: C' of the views (1 <-> 3 converted; None keeps C).
    A batch ``(B, H, W, C)`` is also accepted (each image cut on its own).
    """

    def __init__(self, global_crop_size=224, local_crop_size=96, num_local_crops=8,
                 global_crops_scale=(0.4, 1.0), local_crops_scale=(0.05, 0.4),
                 flip_probability=0.5, color_jitter_probability=0.8,
                 color_jitter=(0.4, 0.4, 0.2, 0.1), grayscale_probability=0.2,
                 blur_probability=(1.0, 0.1, 0.5), solarization_probability=0.2,
                 num_channels=None, seed=None):
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
        if len(tuple(color_jitter)) != 4 or len(tuple(blur_probability)) != 3:
            raise ValueError(
                f"color_jitter must be (brightness, contrast, saturation, hue) and "
                f"blur_probability (global 1, global 2, local), got {color_jitter!r} "
                f"and {blur_probability!r}")
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
        self.num_channels = num_channels
        self._seed = seed
        self._generator = None  # a tf.random.Generator, made on first use (see _rng)

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

    def _view(self, image, size, scale, blur, solarization):
        """One view, in ``DataAugmentationDINO``'s order: crop, flip, jitter,
        grayscale, blur, solarize."""
        rng = self._rng
        view = augment.random_resized_crop(image, size, scale, rng)
        view = augment.horizontal_flip(view, self.flip_probability, rng)
        view = augment.random_apply(
            lambda v: augment.color_jitter(v, *self.color_jitter, rng=rng), view,
            self.color_jitter_probability, rng)
        view = augment.grayscale(view, self.grayscale_probability, rng)
        view = augment.gaussian_blur(view, blur, rng)
        view = augment.random_apply(augment.solarize, view, solarization, rng)
        return view

    def views(self, image):
        """One (H, W, C) image (or a (B, H, W, C) batch) -> dict of stacked views."""
        image = tf.convert_to_tensor(image)
        if image.shape.rank == 4:
            spec = {k: tf.TensorSpec(v.shape[1:], tf.float32)
                    for k, v in self._spec(image.shape[-1]).items()}
            return tf.map_fn(self.views, image, fn_output_signature=spec)
        if image.shape.rank != 3:
            raise ValueError(f"MultiCrop expects an image (H, W, C) or a batch "
                             f"(B, H, W, C), got shape {image.shape}")
        image = augment.to_unit_float(image)
        if self.num_channels is not None:
            image = augment.match_channels(image, self.num_channels)
        blur = self.blur_probability
        out = {"global_crops": tf.stack([
            self._view(image, self.global_crop_size, self.global_crops_scale, blur[i],
                       self.solarization_probability if i else 0.0)
            for i in range(2)])}
        if self.num_local_crops:
            out["local_crops"] = tf.stack([
                self._view(image, self.local_crop_size, self.local_crops_scale, blur[2], 0.0)
                for _ in range(self.num_local_crops)])
        return out

    def _spec(self, channels):
        c = self.num_channels or channels
        spec = {"global_crops": tf.TensorSpec((None, 2, self.global_crop_size,
                                               self.global_crop_size, c))}
        if self.num_local_crops:
            spec["local_crops"] = tf.TensorSpec((None, self.num_local_crops,
                                                 self.local_crop_size, self.local_crop_size, c))
        return spec

    def __call__(self, image, label=None):
        return self.views(image), label
