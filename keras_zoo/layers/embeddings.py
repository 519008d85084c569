"""Patch, token and position embeddings (ViT: Dosovitskiy et al. 2021; MAE)."""

import math

import keras
import numpy as np
from keras import layers, ops

from keras_zoo.layers.initializers import initializer


@keras.saving.register_keras_serializable(package="keras_zoo")
class PatchEmbedding(layers.Layer):
    """Cuts an image into non-overlapping patches and projects each linearly.

    A Conv2D with kernel = stride = patch_size is exactly "flatten each patch,
    multiply by one matrix", in one fused op. (B, H, W, C) -> (B, N, hidden_dim)
    with N = (H / patch_size) * (W / patch_size). ``weight_init``: a scheme of
    ``keras_zoo.layers.initializers`` (the kernel is one (p*p*C, D) matrix,
    so its fans are p*p*C and D, not Keras' conv fans p*p*C and p*p*D).
    """

    def __init__(self, patch_size, hidden_dim, use_bias=True, weight_init="keras", **kwargs):
        super().__init__(**kwargs)
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self.use_bias = use_bias
        self.weight_init = weight_init
        initializer(weight_init, "patch_kernel", 1)  # an unknown scheme fails here

    def build(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        for side in (h, w):
            if side is not None and side % self.patch_size:
                raise ValueError(
                    f"image size {h}x{w} is not divisible by patch_size="
                    f"{self.patch_size}; pick an image size that is a multiple of it"
                )
        fan_in = self.patch_size * self.patch_size * input_shape[-1]
        self.projection = layers.Conv2D(
            self.hidden_dim, self.patch_size, strides=self.patch_size,
            use_bias=self.use_bias, dtype=self.dtype_policy, name="projection",
            kernel_initializer=initializer(self.weight_init, "patch_kernel", fan_in),
            bias_initializer=initializer(self.weight_init, "patch_bias", fan_in))
        self.projection.build(input_shape)

    def call(self, images):
        x = self.projection(images)
        b = ops.shape(x)[0]
        return ops.reshape(x, (b, -1, self.hidden_dim))

    def compute_output_shape(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        n = None if h is None or w is None else (h // self.patch_size) * (w // self.patch_size)
        return (input_shape[0], n, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(patch_size=self.patch_size, hidden_dim=self.hidden_dim,
                      use_bias=self.use_bias, weight_init=self.weight_init)
        return config


@keras.saving.register_keras_serializable(package="keras_zoo")
class ClassToken(layers.Layer):
    """Prepends one learned [CLS] vector to the sequence: (B, N, D) -> (B, 1+N, D).

    Attention lets this token gather a summary of the image; the classifier
    reads it (BERT's [CLS], carried over to ViT). Its initial value follows
    ``weight_init`` (zeros in big_vision and Keras, N(0, 0.02) in MAE and DINO).
    """

    def __init__(self, weight_init="keras", **kwargs):
        super().__init__(**kwargs)
        self.weight_init = weight_init
        initializer(weight_init, "class_token")  # an unknown scheme fails here

    def build(self, input_shape):
        self.token = self.add_weight(
            shape=(1, 1, input_shape[-1]), name="token",
            initializer=initializer(self.weight_init, "class_token"))

    def call(self, x):
        b = ops.shape(x)[0]
        token = ops.broadcast_to(ops.cast(self.token, x.dtype), (b, 1, ops.shape(x)[-1]))
        return ops.concatenate([token, x], axis=1)

    def compute_output_shape(self, input_shape):
        n = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], n, input_shape[2])

    def get_config(self):
        return {**super().get_config(), "weight_init": self.weight_init}


@keras.saving.register_keras_serializable(package="keras_zoo")
class LearnedPositionEmbedding(layers.Layer):
    """Adds a learned vector per position (ViT's 1D position embedding).

    ``num_prefix_tokens`` positions (the CLS token) precede a square grid of
    patches. When a checkpoint is loaded at another image size the grid part
    is resampled bicubically (see ``resample``), as timm and big_vision do.
    Initial values: N(0, ``initializer_stddev``), the ViT code's
    ``normal(stddev=0.02)`` (and timm/DINO's ``trunc_normal_(std=.02)``, whose
    cut-off at +-2 is 100 std away); Keras' TruncatedNormal would cut at 2 std
    and give std 0.0176.
    """

    def __init__(self, num_prefix_tokens=0, initializer_stddev=0.02, **kwargs):
        super().__init__(**kwargs)
        self.num_prefix_tokens = num_prefix_tokens
        self.initializer_stddev = initializer_stddev

    def build(self, input_shape):
        self.embedding = self.add_weight(
            shape=(1, input_shape[1], input_shape[2]),
            initializer=keras.initializers.RandomNormal(stddev=self.initializer_stddev),
            name="embedding")

    def call(self, x):
        return x + ops.cast(self.embedding, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def resample(self, value, target_shape):
        """Resamples a stored (1, P + g*g, D) table to ``target_shape``."""
        value = np.asarray(value)
        p = self.num_prefix_tokens
        old_n, new_n = value.shape[1] - p, target_shape[1] - p
        old_g, new_g = math.isqrt(old_n), math.isqrt(new_n)
        if old_g * old_g != old_n or new_g * new_g != new_n or value.shape[2] != target_shape[2]:
            raise ValueError(
                f"cannot resample position embedding of shape {value.shape} to "
                f"{tuple(target_shape)}: the patch grids must be square")
        grid = value[:, p:].reshape(1, old_g, old_g, -1)
        grid = ops.convert_to_numpy(
            ops.image.resize(grid, (new_g, new_g), interpolation="bicubic",
                             antialias=new_g < old_g))
        return np.concatenate([value[:, :p], grid.reshape(1, new_n, -1)], axis=1)

    def get_config(self):
        config = super().get_config()
        config.update(num_prefix_tokens=self.num_prefix_tokens,
                      initializer_stddev=self.initializer_stddev)
        return config


SINUSOID_LAYOUTS = ("interleaved", "halves")


def sinusoidal_1d(length, dim, max_wavelength=10000.0, layout="interleaved"):
    """The 2017 paper's table: PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos.
    ``layout="halves"``: the same sines in the first d/2 channels and cosines in
    the last d/2 (Marian; transformers' ``MarianSinusoidalPositionalEmbedding``)."""
    if dim % 2:
        raise ValueError(f"sinusoidal embedding needs an even dim, got {dim}")
    if layout not in SINUSOID_LAYOUTS:
        raise ValueError(f"sinusoidal layout {layout!r}; expected one of {SINUSOID_LAYOUTS}")
    pos = np.arange(length, dtype=np.float64)[:, None]
    inv_freq = 1.0 / max_wavelength ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    table = np.zeros((length, dim))
    if layout == "halves":
        table[:, :dim // 2] = np.sin(pos * inv_freq)
        table[:, dim // 2:] = np.cos(pos * inv_freq)
    else:
        table[:, 0::2] = np.sin(pos * inv_freq)
        table[:, 1::2] = np.cos(pos * inv_freq)
    return table.astype("float32")


def sincos_2d(grid_size, dim, max_wavelength=10000.0):
    """Fixed 2D sin-cos table (MAE, MoCo v3): half the channels encode the row,
    half the column. Returns (grid_size**2, dim)."""
    if dim % 4:
        raise ValueError(f"2D sin-cos embedding needs dim divisible by 4, got {dim}")
    half = dim // 2
    omega = 1.0 / max_wavelength ** (np.arange(half // 2, dtype=np.float64) / (half / 2.0))
    rows, cols = np.meshgrid(np.arange(grid_size), np.arange(grid_size), indexing="ij")

    def encode(coords):
        out = coords.reshape(-1)[:, None] * omega[None, :]
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    # MAE's convention: first half from the column (w) index, second from the row.
    return np.concatenate([encode(cols), encode(rows)], axis=1).astype("float32")


@keras.saving.register_keras_serializable(package="keras_zoo")
class SinusoidalPositionEmbedding(layers.Layer):
    """Adds a fixed (non-learned) position table: 1D as in the 2017 Transformer,
    or 2D sin-cos over a square patch grid (``grid=True``), after
    ``num_prefix_tokens`` positions that get zeros (MAE's CLS token).

    ``max_length`` (1D): a table of that many positions, for sequences of
    any length up to it; ``call(x, index=i)`` adds positions i, i+1, ...
    (one decoding step at a time). ``layout`` (1D): "interleaved" sin/cos
    channels as the paper, or "halves" (Marian: sines first, then cosines)."""

    def __init__(self, grid=False, num_prefix_tokens=0, max_wavelength=10000.0,
                 max_length=None, layout="interleaved", **kwargs):
        super().__init__(**kwargs)
        if layout not in SINUSOID_LAYOUTS:
            raise ValueError(f"sinusoidal layout {layout!r}; expected one of {SINUSOID_LAYOUTS}")
        self.layout = layout
        self.grid = grid
        self.num_prefix_tokens = num_prefix_tokens
        self.max_wavelength = max_wavelength
        self.max_length = max_length
        if max_length is not None and grid:
            raise ValueError("max_length is for 1D tables; a grid table has its image's size")

    def build(self, input_shape):
        dim = input_shape[2]
        if self.max_length is not None:
            self.table = sinusoidal_1d(self.max_length, dim, self.max_wavelength,
                                       self.layout)[None]
            return
        n = input_shape[1] - self.num_prefix_tokens
        if self.grid:
            g = math.isqrt(n)
            if g * g != n:
                raise ValueError(f"2D sin-cos embedding needs a square patch grid, got {n} patches")
            table = sincos_2d(g, dim, self.max_wavelength)
        else:
            table = sinusoidal_1d(n, dim, self.max_wavelength, self.layout)
        table = np.concatenate([np.zeros((self.num_prefix_tokens, dim), "float32"), table])
        self.table = table[None]

    def call(self, x, index=0):
        table = ops.convert_to_tensor(self.table)
        if self.max_length is not None:
            positions = ops.cast(index, "int32") + ops.arange(ops.shape(x)[1], dtype="int32")
            table = ops.take(table, positions, axis=1)
        return x + ops.cast(table, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(grid=self.grid, num_prefix_tokens=self.num_prefix_tokens,
                      max_wavelength=self.max_wavelength, max_length=self.max_length,
                      layout=self.layout)
        return config


@keras.saving.register_keras_serializable(package="keras_zoo")
class TokenEmbedding(layers.Layer):
    """Token ids -> vectors, and (``reverse``) vectors -> logits over the same
    table: the weight tying of the 2017 Transformer (one matrix for source,
    target and pre-softmax), GPT-2 and BERT's MLM head.

    Args:
        vocab_size, dim: table shape.
        scale: multiplies the looked-up vectors (the 2017 paper: sqrt(dim)).
        initializer_stddev: normal init (the 2017 paper / tensor2tensor:
            dim**-0.5, so scaled embeddings start at unit variance; GPT/BERT 0.02).
    """

    def __init__(self, vocab_size, dim, scale=1.0, initializer_stddev=0.02, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.dim = dim
        self.scale = scale
        self.initializer_stddev = initializer_stddev

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            shape=(self.vocab_size, self.dim), name="embeddings",
            initializer=keras.initializers.RandomNormal(stddev=self.initializer_stddev))

    def call(self, inputs, reverse=False):
        """ids (...) -> (..., dim); with ``reverse=True``: vectors (..., dim) ->
        logits (..., vocab_size) = x @ table^T, in float32."""
        if reverse:
            # One 2-D matmul, (tokens, dim) x (dim, vocab): the gradient of a
            # batched (B, T, dim) x (dim, vocab) product for the table is a
            # (B, dim, vocab) tensor summed over B (1.2 GB for GPT-2 at batch 8).
            shape = ops.shape(inputs)
            flat = ops.reshape(ops.cast(inputs, "float32"), (-1, shape[-1]))
            logits = ops.matmul(flat, ops.transpose(ops.cast(self.embeddings, "float32")))
            return ops.reshape(logits, (*shape[:-1], self.vocab_size))
        x = ops.take(self.embeddings, ops.cast(inputs, "int32"), axis=0)
        x = ops.cast(x, self.compute_dtype)
        return x * ops.cast(self.scale, x.dtype) if self.scale != 1.0 else x

    def compute_output_spec(self, inputs, reverse=False):
        if reverse:
            return keras.KerasTensor(tuple(inputs.shape[:-1]) + (self.vocab_size,), "float32")
        return keras.KerasTensor(tuple(inputs.shape) + (self.dim,), self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, dim=self.dim, scale=self.scale,
                      initializer_stddev=self.initializer_stddev)
        return config


@keras.saving.register_keras_serializable(package="keras_zoo")
class PositionEmbedding(layers.Layer):
    """Adds a learned vector per absolute position (GPT, BERT): x (B, T, D) +
    table[start_index : start_index + T].

    ``start_index`` (a scalar, may be a tensor) is the position of the first
    token: 0 for a whole sequence, the number of tokens already in the cache
    for an incremental decoding step. The table has ``max_positions`` rows;
    a sequence may not reach past it.
    """

    def __init__(self, max_positions, initializer_stddev=0.02, **kwargs):
        super().__init__(**kwargs)
        self.max_positions = max_positions
        self.initializer_stddev = initializer_stddev

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            shape=(self.max_positions, input_shape[-1]), name="embeddings",
            initializer=keras.initializers.RandomNormal(stddev=self.initializer_stddev))

    def call(self, x, start_index=0):
        length, dim = ops.shape(x)[1], ops.shape(x)[2]
        start = ops.cast(start_index, "int32")
        # The variable as a tensor: JAX will not trace a Keras Variable inside slice.
        table = ops.slice(ops.convert_to_tensor(self.embeddings), (start, ops.zeros((), "int32")),
                          (length, dim))
        return x + ops.cast(table, x.dtype)[None]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(max_positions=self.max_positions,
                      initializer_stddev=self.initializer_stddev)
        return config
