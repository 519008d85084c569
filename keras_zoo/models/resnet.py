"""ResNet (He et al. 2016, "Deep Residual Learning for Image Recognition")."""

from typing import ClassVar

import keras
from keras import layers

from keras_zoo.layers.conv_blocks import BasicBlock, BottleneckBlock
from keras_zoo.layers.normalization import BatchNormalization
from keras_zoo.models.base import ZooModel
from keras_zoo.preprocessing import check_label_names, image_input
from keras_zoo.presets import register_family, register_preset

_BLOCKS = {"basic": BasicBlock, "bottleneck": BottleneckBlock}


@register_family
@keras.saving.register_keras_serializable(package="keras_zoo")
class ResNet(ZooModel):
    """Stem -> four stages of residual blocks -> global average pool -> classifier.

    ``stem="imagenet"``: 7x7/2 conv (64) + BN + ReLU + 3x3/2 max pool, as in
    the paper; ``stem="small"``: one 3x3/1 conv and no pool, for 32x32 inputs.
    Stages 2-4 halve the resolution in their first block. Convolutions have
    no bias (BatchNorm follows each). ResNet-50 has 25,557,032 trainable
    parameters with a 1000-class head. ``num_classes=None`` gives the pooled
    features (2048 for ResNet-50, 512 for ResNet-18).

    ``preactivation=True`` gives ResNetV2 (He et al. 2016b, "Identity Mappings
    in Deep Residual Networks"): BN-ReLU before each conv inside the blocks, a
    stem conv without BN-ReLU, and one BN-ReLU after the last stage.

    ResNet-vd (He et al. 2019, "Bag of Tricks for Image Classification", as in
    PaddleClas): ``stem="deep"`` is ResNet-C's three 3x3 convs (widths f/2,
    f/2, f for a first stage of width f) in place of the 7x7; ``avg_down=True``
    is ResNet-D's shortcut - the first block of every stage projects, and a
    strided one downsamples by 2x2 average pooling before its 1x1 conv
    instead of skipping three quarters of the pixels with a strided 1x1 conv.

    ``stem_width``: channels out of the stem (None: ``stage_filters[0]``, as
    in ResNet-18..152; timm keeps 64 whatever the stage widths, Hugging Face
    calls it ``embedding_size``). ``preprocessing`` / ``label_names``: as
    ``ViT``'s (``keras_zoo.preprocessing``).
    """

    MEDIAPIPE_TASKS: ClassVar[dict] = {"serving_default": "image_classifier",
                                       "embedding": "image_embedder"}

    def __init__(self, block_type="bottleneck", stage_depths=(3, 4, 6, 3),
                 stage_filters=(64, 128, 256, 512), image_size=224, num_channels=3,
                 num_classes=1000, stem="imagenet", zero_init_residual=False,
                 preactivation=False, avg_down=False, stem_width=None, preprocessing=None,
                 label_names=None, name="resnet", **kwargs):
        if block_type not in _BLOCKS:
            raise ValueError(f"block_type must be one of {sorted(_BLOCKS)}, got {block_type!r}")
        if stem not in ("imagenet", "small", "deep"):
            raise ValueError(f"stem must be 'imagenet', 'small' or 'deep', got {stem!r}")
        block = _BLOCKS[block_type]
        check_label_names(label_names, num_classes)
        if stem_width is not None and (isinstance(stem_width, bool) or
                                       not isinstance(stem_width, int) or stem_width < 1):
            raise ValueError(f"stem_width must be a positive integer or None, got {stem_width!r}")
        width = stage_filters[0] if stem_width is None else stem_width
        inputs, x = image_input(image_size, num_channels, preprocessing)
        if stem == "imagenet":
            x = layers.ZeroPadding2D(3, name="stem_pad")(x)
            x = layers.Conv2D(width, 7, strides=2, use_bias=False,
                              kernel_initializer="he_normal", name="stem_conv")(x)
        elif stem == "deep":
            x = _deep_stem(x, width, preactivation)
        else:
            x = layers.Conv2D(width, 3, padding="same", use_bias=False,
                              kernel_initializer="he_normal", name="stem_conv")(x)
        if not preactivation and stem != "deep":  # ResNetV2 normalises in each block
            x = BatchNormalization(epsilon=1e-5, momentum=0.9, name="stem_bn")(x)
            x = layers.ReLU(name="stem_relu")(x)
        if stem in ("imagenet", "deep"):
            if preactivation:
                # No ReLU before the pool, so values can be negative: pad with -inf
                # so that the padding never wins the max.
                x = keras.ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]],
                                  constant_values=float("-inf"))
            else:
                x = layers.ZeroPadding2D(1, name="pool_pad")(x)
            x = layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
        for s, (depth, filters) in enumerate(zip(stage_depths, stage_filters)):
            for b in range(depth):
                stride = 2 if (s > 0 and b == 0) else 1
                x = block(filters, stride=stride, zero_init_residual=zero_init_residual,
                          preactivation=preactivation, avg_down=avg_down,
                          always_project=avg_down and b == 0,
                          name=f"stage{s + 1}_block{b + 1}")(x)
        if preactivation:
            x = BatchNormalization(epsilon=1e-5, momentum=0.9, name="post_bn")(x)
            x = layers.ReLU(name="post_relu")(x)
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if num_classes:
            x = layers.Dense(num_classes, name="head", dtype="float32")(x)
        super().__init__(inputs=inputs, outputs=x, name=name, **kwargs)

    def embedding_kinds(self):
        return ("pooled",)

    def embedding_model(self, kind=None):
        """``"pooled"``: the global-average-pooled features of the last stage
        (what the head reads; 512 for ResNet-18/34, 2048 for ResNet-50+)."""
        kind = self._embedding_kind(kind)
        return self._embedding_from(kind, self.inputs,
                                    lambda: self.get_layer("avg_pool").output)


def _deep_stem(x, width, preactivation):
    """ResNet-C: 3x3/2 (width/2) -> 3x3 (width/2) -> 3x3 (width), BN-ReLU between
    and (unless pre-activation) after; same receptive field as one 7x7/2."""
    x = layers.ZeroPadding2D(1, name="stem_pad")(x)
    widths = [width // 2, width // 2, width]
    for i, w in enumerate(widths, start=1):
        x = layers.Conv2D(w, 3, strides=2 if i == 1 else 1,
                          padding="valid" if i == 1 else "same", use_bias=False,
                          kernel_initializer="he_normal", name=f"stem_conv{i}")(x)
        if i < len(widths) or not preactivation:
            x = BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"stem_bn{i}")(x)
            x = layers.ReLU(name=f"stem_relu{i}")(x)
    return x


for _name, _block, _depths in [
    ("resnet18", "basic", [2, 2, 2, 2]),
    ("resnet34", "basic", [3, 4, 6, 3]),
    ("resnet50", "bottleneck", [3, 4, 6, 3]),
    ("resnet101", "bottleneck", [3, 4, 23, 3]),
    ("resnet152", "bottleneck", [3, 8, 36, 3]),
]:
    register_preset(_name, "ResNet", {"block_type": _block, "stage_depths": _depths},
                    f"{_name.upper()}, 224x224x3, 1000 classes")
register_preset("resnet_tiny_digits", "ResNet",
                {"block_type": "basic", "stage_depths": [1, 1, 1, 1],
                 "stage_filters": [16, 32, 64, 128], "image_size": 32, "num_channels": 1,
                 "num_classes": 10, "stem": "small"},
                "a small 4-stage basic-block ResNet for 32x32x1 digits", tiny=True)
