"""Residual blocks of ResNet (He et al. 2016, "Deep Residual Learning")."""

import keras
from keras import layers

from keras_zoo.layers.normalization import BatchNormalization


def _conv(filters, kernel, stride, name, dtype):
    # No bias: BatchNorm's beta follows every conv, as in the paper and torchvision.
    # Strided convs pad symmetrically (as torchvision/keras-hub), not TF's "same",
    # which pads only the bottom/right side and would shift ported weights.
    padding = "valid" if (stride > 1 and kernel > 1) else "same"
    return layers.Conv2D(filters, kernel, strides=stride, padding=padding,
                         use_bias=False, kernel_initializer="he_normal",
                         dtype=dtype, name=name)


def _pad(kernel, stride, name, dtype):
    if stride > 1 and kernel > 1:
        return layers.ZeroPadding2D(kernel // 2, dtype=dtype, name=name)
    return None


def _bn(name, dtype, zero_init=False, epsilon=1e-5, momentum=0.9):
    return BatchNormalization(
        epsilon=epsilon, momentum=momentum, dtype=dtype, name=name,
        gamma_initializer="zeros" if zero_init else "ones")


class _ResidualBlock(layers.Layer):
    """``preactivation=True``: the ResNetV2 ordering of He et al. 2016b
    ("Identity Mappings in Deep Residual Networks"): BN-ReLU before each conv
    (the first BN-ReLU also feeds a projection shortcut), no BN after the last
    conv and no ReLU after the addition, so the identity path stays clean.

    ``avg_down=True``: ResNet-D (He et al. 2019, "Bag of Tricks"): a strided
    projection shortcut averages 2x2 pixels and then applies a 1x1/1 conv,
    rather than a 1x1/2 conv that ignores 3 of every 4 pixels.
    ``always_project=True``: a projection shortcut even when shapes match (the
    first block of each stage in PaddleClas' ResNet-vd)."""

    expansion = 1

    def __init__(self, filters, stride=1, zero_init_residual=False, preactivation=False,
                 avg_down=False, always_project=False, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.stride = stride
        self.zero_init_residual = zero_init_residual
        self.preactivation = preactivation
        self.avg_down = avg_down
        self.always_project = always_project

    def _build_shortcut(self, input_shape):
        out = self.filters * self.expansion
        self.projection = self.shortcut_pool = None
        if self.stride != 1 or input_shape[-1] != out or self.always_project:
            # Option B of the paper: 1x1 projection (with BN) when shapes change.
            stride, shape = self.stride, input_shape
            if self.avg_down and self.stride > 1:
                self.shortcut_pool = layers.AveragePooling2D(
                    2, strides=self.stride, padding="same", dtype=self.dtype_policy,
                    name="shortcut_pool")
                stride, shape = 1, self.shortcut_pool.compute_output_shape(input_shape)
            self.projection = _conv(out, 1, stride, "shortcut_conv", self.dtype_policy)
            self.projection.build(shape)
            if not self.preactivation:  # pre-activation: the input is already normalised
                self.projection_bn = _bn("shortcut_bn", self.dtype_policy)
                self.projection_bn.build(self.projection.compute_output_shape(shape))

    def _shortcut(self, x, training):
        if self.projection is None:
            return x
        if self.shortcut_pool is not None:
            x = self.shortcut_pool(x)
        if self.preactivation:
            return self.projection(x)
        return self.projection_bn(self.projection(x), training=training)

    def _build_chain(self, input_shape, specs):
        """specs: (filters, kernel, stride) per conv; each conv gets a BN."""
        self.convs, self.bns, self.pads = [], [], []
        shape = input_shape
        if self.preactivation:
            self.preact_bn = _bn("preact_bn", self.dtype_policy)
            self.preact_bn.build(input_shape)
        for i, (filters, kernel, stride) in enumerate(specs, start=1):
            pad = _pad(kernel, stride, f"pad{i}", self.dtype_policy)
            if pad is not None:
                shape = pad.compute_output_shape(shape)
            self.pads.append(pad)
            conv = _conv(filters, kernel, stride, f"conv{i}", self.dtype_policy)
            last = i == len(specs)
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            bn = None
            if not (last and self.preactivation):
                bn = _bn(f"bn{i}", self.dtype_policy, zero_init=last and self.zero_init_residual)
                bn.build(shape)
            self.convs.append(conv)
            self.bns.append(bn)

    def call(self, x, training=None):
        if self.preactivation:
            x_pre = keras.activations.relu(self.preact_bn(x, training=training))
            shortcut = x if self.projection is None else self._shortcut(x_pre, training)
            x = x_pre
        else:
            shortcut = self._shortcut(x, training)
        for i, (pad, conv, bn) in enumerate(zip(self.pads, self.convs, self.bns)):
            if pad is not None:
                x = pad(x)
            x = conv(x)
            if bn is not None:
                x = bn(x, training=training)
            if i < len(self.convs) - 1:
                x = keras.activations.relu(x)
        if self.preactivation:
            return x + shortcut
        return keras.activations.relu(x + shortcut)

    def compute_output_shape(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        s = self.stride
        h = None if h is None else -(-h // s)
        w = None if w is None else -(-w // s)
        return (input_shape[0], h, w, self.filters * self.expansion)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, stride=self.stride,
                      zero_init_residual=self.zero_init_residual,
                      preactivation=self.preactivation, avg_down=self.avg_down,
                      always_project=self.always_project)
        return config


@keras.saving.register_keras_serializable(package="keras_zoo")
class BasicBlock(_ResidualBlock):
    """Two 3x3 convs (ResNet-18/34). Output channels = filters."""

    expansion = 1

    def build(self, input_shape):
        self._build_chain(input_shape, [(self.filters, 3, self.stride), (self.filters, 3, 1)])
        self._build_shortcut(input_shape)


@keras.saving.register_keras_serializable(package="keras_zoo")
class BottleneckBlock(_ResidualBlock):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4) (ResNet-50/101/152).

    The stride sits on the 3x3 conv ("ResNet v1.5", torchvision and keras-hub);
    the 2016 paper put it on the first 1x1. Parameter counts are the same.
    """

    expansion = 4

    def build(self, input_shape):
        f = self.filters
        self._build_chain(input_shape, [(f, 1, 1), (f, 3, self.stride), (4 * f, 1, 1)])
        self._build_shortcut(input_shape)
