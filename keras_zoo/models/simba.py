"""SiMBA (Patro & Agneeswaran 2024, "SiMBA: Simplified Mamba-based Architecture for
Vision and Multivariate Time series"), as in the official code
(github.com/badripatro/simba, classification/simba.py).

A four-stage pyramid like PVT-v2: a convolutional stem (stride 4), then per
stage a stride-2 downsampling convolution and blocks of

    x = x + Mamba(LayerNorm(x))                   token mixer over the patch sequence
    x = x + ChannelMixer(LayerNorm(x))            EinFFT, or an MLP with a 3x3 depthwise conv

then a class block on the mean of the last stage's tokens, a LayerNorm and the
head. EinFFT mixes channels in the frequency domain: a 2-D FFT over (tokens,
channel blocks), a block-diagonal complex two-layer MLP ("Einstein matrix
multiplication"), soft-shrinkage and the inverse FFT.
"""

import math

import keras
import numpy as np
from keras import layers, ops

from keras_zoo.layers.initializers import AbsoluteTruncatedNormal
from keras_zoo.layers.normalization import BatchNormalization, LayerNormalization
from keras_zoo.layers.ssm import MambaMixer
from keras_zoo.models.base import ZooModel
from keras_zoo.presets import register_family, register_preset

# The official _init_weights: Linear ~ timm trunc_normal(std=0.02) (cut at +-2
# absolute: N(0, 0.02)), zero bias; Conv2d ~ normal(0, sqrt(2 / fan_out)), zero
# bias. It reaches the Mamba modules' Linear layers too (dt_proj bias included),
# which MambaMixer's projection_init_stddev mirrors. Functions, not module-level
# objects: each weight needs its own initializer (an unseeded Keras initializer
# object has one fixed seed, so a shared one made every same-shaped kernel equal).
def _linear():
    return {"kernel_initializer": AbsoluteTruncatedNormal(0.02), "bias_initializer": "zeros"}


def _conv_init():
    return keras.initializers.VarianceScaling(2.0, mode="fan_out",
                                              distribution="untruncated_normal")


@keras.saving.register_keras_serializable(package="keras_zoo")
class EinFFT(layers.Layer):
    """EinFFT channel mixer (SiMBA Sec. 3.2): (batch, tokens, dim) -> same shape.

    x -> view as (tokens, num_blocks, dim / num_blocks) -> FFT2 over (tokens,
    blocks), orthonormal -> block-diagonal complex linear + bias, ReLU on real
    and imaginary parts -> second complex linear + bias -> soft-shrink(0.01)
    -> inverse FFT2 -> real part. Weights as in the official code:
    weight_1, weight_2 (2, blocks, block, block) and bias_1, bias_2 (2, blocks,
    block), [0] real and [1] imaginary, initialised N(0, 0.02^2).

    ``dft="fft"`` uses ``keras.ops.fft2``; ``dft="matmul"`` multiplies by the
    (constant) DFT matrices instead: the same numbers, O(tokens^2) work, and
    only MatMul-type ops, which TFLite runs as builtins (it has no complex FFT).
    """

    def __init__(self, num_blocks=4, sparsity_threshold=0.01, dft="fft", **kwargs):
        super().__init__(**kwargs)
        if dft not in ("fft", "matmul"):
            raise ValueError(f"dft must be 'fft' or 'matmul', got {dft!r}")
        self.num_blocks = num_blocks
        self.sparsity_threshold = sparsity_threshold
        self.dft = dft

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim % self.num_blocks:
            raise ValueError(f"EinFFT: width {dim} is not divisible by num_blocks="
                             f"{self.num_blocks}")
        self.block_size = block = dim // self.num_blocks
        shape_w, shape_b = (2, self.num_blocks, block, block), (2, self.num_blocks, block)
        for name, shape in (("weight_1", shape_w), ("weight_2", shape_w), ("bias_1", shape_b),
                            ("bias_2", shape_b)):  # scale * randn, each on its own
            setattr(self, name, self.add_weight(
                name=name, shape=shape, initializer=keras.initializers.RandomNormal(stddev=0.02)))

    def _fft2(self, real, imag, inverse):
        """Orthonormal 2-D DFT over axes 1 (tokens) and 2 (blocks) of (B, N, b, d)."""
        n, b = real.shape[1], real.shape[2]
        if self.dft == "fft":  # keras.ops.fft2 transforms the last two axes
            fn = ops.ifft2 if inverse else ops.fft2
            real, imag = fn((ops.transpose(real, (0, 3, 1, 2)), ops.transpose(imag, (0, 3, 1, 2))))
            scale = math.sqrt(n * b) if inverse else 1.0 / math.sqrt(n * b)
            return (ops.transpose(real, (0, 2, 3, 1)) * scale,
                    ops.transpose(imag, (0, 2, 3, 1)) * scale)

        def dft_matrices(size):
            k = np.arange(size)
            angle = 2.0 * np.pi * np.outer(k, k) / size
            sign = 1.0 if inverse else -1.0
            return (ops.convert_to_tensor((np.cos(angle) / math.sqrt(size)).astype("float32")),
                    ops.convert_to_tensor((sign * np.sin(angle) / math.sqrt(size))
                                          .astype("float32")))

        # Tokens: (N, N) @ (batch, N, b * d). Blocks: (b, b) @ (batch, N, b, d).
        # Plain matmuls (einsum with a constant trips the TFLite converter).
        cos, sin = dft_matrices(n)
        d = real.shape[3]
        real, imag = (ops.reshape(t, (-1, n, b * d)) for t in (real, imag))
        real, imag = (ops.matmul(cos, real) - ops.matmul(sin, imag),
                      ops.matmul(cos, imag) + ops.matmul(sin, real))
        real, imag = (ops.reshape(t, (-1, n, b, d)) for t in (real, imag))
        cos, sin = dft_matrices(b)
        real, imag = (ops.matmul(cos, real) - ops.matmul(sin, imag),
                      ops.matmul(cos, imag) + ops.matmul(sin, real))
        return real, imag

    def call(self, x):
        dtype = x.dtype
        x = ops.cast(x, "float32")  # the FFT runs in float32, as in the official code
        n, dim = x.shape[1], x.shape[2]
        x = ops.reshape(x, (-1, n, self.num_blocks, self.block_size))
        real, imag = self._fft2(x, ops.zeros_like(x), inverse=False)

        def multiply(t, w):  # per block: (batch, N, b, d) x (b, d, k) -> (batch, N, b, k)
            blocks_first = ops.reshape(ops.transpose(t, (2, 0, 1, 3)),
                                       (self.num_blocks, -1, self.block_size))
            out = ops.transpose(ops.matmul(blocks_first, w), (1, 0, 2))
            return ops.reshape(out, (-1, n, self.num_blocks, self.block_size))

        w1, w2, b1, b2 = (ops.cast(v, "float32") for v in
                          (self.weight_1, self.weight_2, self.bias_1, self.bias_2))
        real_1 = ops.relu(multiply(real, w1[0]) - multiply(imag, w1[1]) + b1[0])
        imag_1 = ops.relu(multiply(real, w1[1]) + multiply(imag, w1[0]) + b1[1])
        real_2 = multiply(real_1, w2[0]) - multiply(imag_1, w2[1]) + b2[0]
        imag_2 = multiply(real_1, w2[1]) + multiply(imag_1, w2[0]) + b2[1]
        if self.sparsity_threshold:
            real_2, imag_2 = (_soft_shrink(t, self.sparsity_threshold) for t in (real_2, imag_2))
        real, _ = self._fft2(real_2, imag_2, inverse=True)
        return ops.cast(ops.reshape(real, (-1, n, dim)), dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(num_blocks=self.num_blocks, sparsity_threshold=self.sparsity_threshold,
                      dft=self.dft)
        return config


def _soft_shrink(x, threshold):
    """sign(x) max(|x| - t, 0), as two ReLUs (builtins everywhere)."""
    return ops.relu(x - threshold) - ops.relu(-x - threshold)


@keras.saving.register_keras_serializable(package="keras_zoo")
class ConvFeedForward(layers.Layer):
    """PVT-v2's FFN (the official ``PVT2FFN``): Linear -> 3x3 depthwise conv over the
    token grid -> GELU -> Linear. Input (batch, H * W, dim); ``grid`` = (H, W)."""

    def __init__(self, hidden_dim, grid, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.grid = tuple(grid)

    def build(self, input_shape):
        dim = input_shape[-1]
        kw = {"dtype": self.dtype_policy}
        self.fc1 = layers.Dense(self.hidden_dim, name="fc1", **_linear(), **kw)
        self.fc1.build(input_shape)
        self.dwconv = layers.DepthwiseConv2D(3, padding="same", name="dwconv", **kw,
                                             depthwise_initializer=_conv_init())
        self.dwconv.build((None, *self.grid, self.hidden_dim))
        self.fc2 = layers.Dense(dim, name="fc2", **_linear(), **kw)
        self.fc2.build((None, None, self.hidden_dim))

    def call(self, x):
        h = self.fc1(x)
        h = ops.reshape(h, (-1, *self.grid, self.hidden_dim))
        h = ops.reshape(self.dwconv(h), (-1, self.grid[0] * self.grid[1], self.hidden_dim))
        return self.fc2(ops.gelu(h, approximate=False))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim, grid=list(self.grid))
        return config


@keras.saving.register_keras_serializable(package="keras_zoo")
class DropPath(layers.Layer):
    """Stochastic depth: drops a whole residual branch per example while training."""

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if rate > 0 else None

    def call(self, x, training=None):
        if not training or self.rate <= 0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        mask = ops.floor(keep + keras.random.uniform(shape, seed=self.seed_generator))
        return x * ops.cast(mask / keep, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="keras_zoo")
class SimbaBlock(layers.Layer):
    """x + Mamba(LN(x)), then x + ChannelMixer(LN(x)) (the official ``Block_mamba``).

    Args:
        channel_mixer: "einfft" or "mlp" (``ConvFeedForward``, hidden =
            mlp_ratio * dim; ``grid`` needed) or "ffn" (Linear-GELU-Linear,
            the class block's).
        mamba: MambaMixer keyword arguments (official: state 64, kernel 4, expand 2).
        drop_path: stochastic depth rate of both branches.
    """

    def __init__(self, channel_mixer="einfft", mlp_ratio=4, grid=None, mamba=None,
                 einfft=None, drop_path=0.0, layer_norm_epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        if channel_mixer not in ("einfft", "mlp", "ffn"):
            raise ValueError(f"channel_mixer must be 'einfft', 'mlp' or 'ffn', got "
                             f"{channel_mixer!r}")
        self.channel_mixer = channel_mixer
        self.mlp_ratio = mlp_ratio
        self.grid = None if grid is None else tuple(grid)
        self.mamba = dict(mamba or {})
        self.einfft = dict(einfft or {})
        self.drop_path = drop_path
        self.layer_norm_epsilon = layer_norm_epsilon

    def build(self, input_shape):
        dim = input_shape[-1]
        kw = {"dtype": self.dtype_policy}
        # MambaLayer's own LayerNorm keeps PyTorch's default eps (1e-5).
        self.mamba_norm = LayerNormalization(epsilon=1e-5, name="mamba_norm", **kw)
        self.mixer = MambaMixer(**self.mamba, projection_init_stddev=0.02, name="mixer", **kw)
        self.mlp_norm = LayerNormalization(epsilon=self.layer_norm_epsilon, name="mlp_norm", **kw)
        if self.channel_mixer == "einfft":
            self.mlp = EinFFT(**self.einfft, name="mlp", **kw)
        elif self.channel_mixer == "mlp":
            self.mlp = ConvFeedForward(int(dim * self.mlp_ratio), self.grid, name="mlp", **kw)
        else:
            self.mlp = keras.Sequential([
                layers.Dense(int(dim * self.mlp_ratio), name="fc1", **_linear(), **kw),
                layers.Activation("gelu", name="gelu"),
                layers.Dense(dim, name="fc2", **_linear(), **kw)], name="mlp")
        self.drop = DropPath(self.drop_path, name="drop_path")
        for sub in (self.mamba_norm, self.mixer, self.mlp_norm, self.mlp):
            sub.build(input_shape)

    def call(self, x, training=None):
        x = x + self.drop(self.mixer(self.mamba_norm(x)), training=training)
        return x + self.drop(self.mlp(self.mlp_norm(x)), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(channel_mixer=self.channel_mixer, mlp_ratio=self.mlp_ratio,
                      grid=None if self.grid is None else list(self.grid), mamba=self.mamba,
                      einfft=self.einfft, drop_path=self.drop_path,
                      layer_norm_epsilon=self.layer_norm_epsilon)
        return config


@keras.saving.register_keras_serializable(package="keras_zoo")
class MeanToken(layers.Layer):
    """(batch, N, dim) -> (batch, 1, dim): the mean token, SiMBA's class token."""

    def call(self, x):
        return ops.mean(x, axis=1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1, input_shape[2])


@keras.saving.register_keras_serializable(package="keras_zoo")
class TokenLabelMerge(layers.Layer):
    """[class logits (batch, K), token logits (batch, N, K)] -> class + 0.5 max_N token."""

    def call(self, inputs):
        cls, tokens = inputs
        return cls + 0.5 * ops.max(tokens, axis=1)

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]


def _conv(filters, kernel, stride, name, bias=True, padding=None):
    """PyTorch-style explicit symmetric padding, then a 'valid' convolution."""
    pad = kernel // 2 if padding is None else padding
    conv = layers.Conv2D(filters, kernel, stride, use_bias=bias, name=name,
                         kernel_initializer=_conv_init(), bias_initializer="zeros")
    if not pad:
        return conv
    pad_layer = layers.ZeroPadding2D(pad, name=name + "_pad")
    return lambda t: conv(pad_layer(t))


@register_family
@keras.saving.register_keras_serializable(package="keras_zoo")
class Simba(ZooModel):
    """SiMBA image classifier: (batch, H, W, C) images -> (batch, num_classes) logits.

    SiMBA-S (official ``simba_s``): stem 32, widths (64, 128, 320, 448), depths
    (3, 4, 6, 3), MLP ratios (8, 8, 4, 4), Mamba state 64; 224x224 input gives
    56x56, 28x28, 14x14, 7x7 token grids. ``channel_mixer="einfft"`` (the
    paper's) or ``"mlp"`` (the official code's default, PVT-v2's conv FFN).
    ``bidirectional=True`` scans each stage's token sequence both ways
    (Vision Mamba's bidirectional block; not in the official SiMBA).

    Args:
        stem_hidden_dim, embed_dims, depths, mlp_ratios: the pyramid.
        state_dim, conv_kernel, expand: the Mamba token mixer.
        einfft_blocks, sparsity_threshold: EinFFT (4 and 0.01 officially);
            ``einfft_dft="matmul"`` for a TFLite-builtins graph.
        token_label: the official auxiliary token-labelling head (training
            recipe); off by default, it adds dim * classes + classes parameters.
    """

    def __init__(self, image_size=224, num_channels=3, num_classes=1000, stem_hidden_dim=32,
                 embed_dims=(64, 128, 320, 448), depths=(3, 4, 6, 3), mlp_ratios=(8, 8, 4, 4),
                 channel_mixer="einfft", state_dim=64, conv_kernel=4, expand=2,
                 bidirectional=False, einfft_blocks=4, sparsity_threshold=0.01,
                 einfft_dft="fft", drop_path_rate=0.0, token_label=False,
                 layer_norm_epsilon=1e-6, chunk_size=None, name="simba", **kwargs):
        stages = len(embed_dims)
        if not (len(depths) == len(mlp_ratios) == stages) or stages < 1:
            raise ValueError(f"embed_dims, depths and mlp_ratios need one entry per stage; got "
                             f"{len(embed_dims)}, {len(depths)} and {len(mlp_ratios)}")
        stride = 4 * 2 ** (stages - 1)
        if image_size % stride:
            raise ValueError(f"image_size={image_size} is not divisible by {stride} (the stem's "
                             f"4 and {stages - 1} downsamplings of 2)")
        if channel_mixer not in ("einfft", "mlp"):
            raise ValueError(f"channel_mixer must be 'einfft' or 'mlp', got {channel_mixer!r}")
        if channel_mixer == "einfft":
            for dim in embed_dims:
                if dim % einfft_blocks:
                    raise ValueError(f"embed dim {dim} is not divisible by einfft_blocks="
                                     f"{einfft_blocks} (EinFFT's block-diagonal weights)")
        mamba = {"state_dim": state_dim, "conv_kernel": conv_kernel, "expand": expand,
                 "bidirectional": bidirectional, "chunk_size": chunk_size}
        einfft = {"num_blocks": einfft_blocks, "sparsity_threshold": sparsity_threshold,
                  "dft": einfft_dft}
        rates = np.linspace(0.0, drop_path_rate, sum(depths)).tolist()

        inputs = keras.Input((image_size, image_size, num_channels), name="images")
        x = inputs
        for i, (filters, stride_i) in enumerate(((stem_hidden_dim, 2), (stem_hidden_dim, 1),
                                                  (stem_hidden_dim, 1))):
            x = _conv(filters, 7 if i == 0 else 3, stride_i, f"stem_conv{i + 1}", bias=False)(x)
            x = BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"stem_bn{i + 1}")(x)
            x = layers.ReLU(name=f"stem_relu{i + 1}")(x)
        size, block = image_size // 2, 0
        for stage, (dim, depth, ratio) in enumerate(zip(embed_dims, depths, mlp_ratios)):
            prefix = "stem" if stage == 0 else f"downsample{stage + 1}"
            x = _conv(dim, 3, 2, f"{prefix}_proj")(x)
            size //= 2
            x = layers.Reshape((size * size, dim), name=f"{prefix}_tokens")(x)
            x = LayerNormalization(epsilon=1e-5, name=f"{prefix}_norm")(x)
            for j in range(depth):
                x = SimbaBlock(channel_mixer, ratio, (size, size), mamba, einfft, rates[block],
                               layer_norm_epsilon, name=f"stage{stage + 1}_block{j + 1}")(x)
                block += 1
            x = LayerNormalization(epsilon=layer_norm_epsilon, name=f"stage{stage + 1}_norm")(x) \
                if stage < stages - 1 else x
            if stage < stages - 1:
                x = layers.Reshape((size, size, dim), name=f"stage{stage + 1}_grid")(x)
        # The class block: the mean token, refined by one more Mamba + channel mixer.
        tokens = x
        cls = MeanToken(name="mean_token")(x)
        cls = SimbaBlock("einfft" if channel_mixer == "einfft" else "ffn", mlp_ratios[-1],
                         None, {**mamba, "bidirectional": False}, einfft, 0.0,
                         layer_norm_epsilon, name="class_block")(cls)
        cls = layers.Reshape((embed_dims[-1],), name="class_token")(cls)
        final_norm = LayerNormalization(epsilon=layer_norm_epsilon, name=f"stage{stages}_norm")
        outputs = final_norm(cls)
        if num_classes:
            outputs = layers.Dense(num_classes, name="head", dtype="float32", **_linear())(outputs)
            if token_label:  # official inference: class logits + 0.5 max over token logits
                aux = layers.Dense(num_classes, name="aux_head", dtype="float32", **_linear())(
                    final_norm(tokens))
                outputs = TokenLabelMerge(name="token_label")([outputs, aux])
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)

    def serving_signatures(self):
        """TFLite has no complex FFT: the EinFFT variant exports with its DFT as
        constant matrices (the same numbers; see ``EinFFT``), MLP variants as they are."""
        config = self.get_zoo_config()
        if config["channel_mixer"] != "einfft" or config["einfft_dft"] == "matmul":
            return {"serving_default": self}
        if "_matmul_twin" not in vars(self):
            twin = type(self)(**{**config, "einfft_dft": "matmul"}, name=self.name)
            twin.set_weights(self.get_weights())
            vars(self)["_matmul_twin"] = twin
        else:
            vars(self)["_matmul_twin"].set_weights(self.get_weights())
        return {"serving_default": vars(self)["_matmul_twin"]}


# ---------------------------------------------------------------- presets
# Official model definitions (classification/simba.py: simba_s, simba_b, simba_l).
_SIZES = {
    "s": {"stem_hidden_dim": 32, "embed_dims": [64, 128, 320, 448], "depths": [3, 4, 6, 3]},
    "b": {"stem_hidden_dim": 64, "embed_dims": [64, 128, 320, 512], "depths": [3, 4, 12, 3]},
    "l": {"stem_hidden_dim": 64, "embed_dims": [96, 192, 384, 512], "depths": [3, 6, 18, 3]},
}
for _size, _config in _SIZES.items():
    register_preset(f"simba_{_size}", "Simba", {**_config, "channel_mixer": "einfft"},
                    f"SiMBA-{_size.upper()} (EinFFT channel mixer), 224x224x3, 1000 classes")
    register_preset(f"simba_{_size}_mlp", "Simba", {**_config, "channel_mixer": "mlp"},
                    f"SiMBA-{_size.upper()} (MLP channel mixer, the official code's default), "
                    "224x224x3, 1000 classes")
register_preset("simba_tiny_digits", "Simba",
                {"image_size": 32, "num_channels": 1, "num_classes": 10, "stem_hidden_dim": 16,
                 "embed_dims": [32, 64], "depths": [1, 1], "mlp_ratios": [4, 4],
                 "state_dim": 16, "channel_mixer": "einfft"},
                "a 2-stage SiMBA for 32x32x1 digits (8x8 then 4x4 tokens, EinFFT)", tiny=True)
