"""Selective state spaces (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling
with Selective State Spaces"): the scan, and the Mamba mixer built around it.

Notation follows the paper and ``mamba_ssm/modules/mamba_simple.py``: per
channel d of the inner width and state index n,

    delta_t = softplus(dt_proj(.)_t)                   (input-dependent step)
    h_t     = exp(delta_t A) h_{t-1} + delta_t B_t x_t   (A = -exp(A_log) < 0)
    y_t     = C_t . h_t + D x_t

with B_t, C_t (state_dim numbers per token) also computed from the input.
"""

import math

import keras
import numpy as np
from keras import layers, ops

from keras_zoo.layers.initializers import AbsoluteTruncatedNormal

# ---------------------------------------------------------------- initialisers

@keras.saving.register_keras_serializable(package="keras_zoo")
class S4DRealInitializer(keras.initializers.Initializer):
    """``A_log[d, n] = log(n + 1)``: A = -(1, 2, ..., N) for every channel (S4D-real)."""

    def __call__(self, shape, dtype=None):
        channels, state_dim = shape
        a = np.tile(np.arange(1, state_dim + 1, dtype="float32"), (channels, 1))
        return ops.cast(np.log(a), dtype or "float32")

    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(package="keras_zoo")
class DtBiasInitializer(keras.initializers.Initializer):
    """dt_proj bias such that softplus(bias) is log-uniform in [dt_min, dt_max],
    floored at ``dt_init_floor``, through the inverse softplus
    ``dt + log(-expm1(-dt))`` -- the reference's initialisation."""

    def __init__(self, dt_min=1e-3, dt_max=1e-1, dt_init_floor=1e-4, seed=None):
        self.dt_min, self.dt_max, self.dt_init_floor, self.seed = (
            dt_min, dt_max, dt_init_floor, seed)

    def __call__(self, shape, dtype=None):
        u = keras.initializers.RandomUniform(0.0, 1.0, seed=self.seed)(shape, "float32")
        log_min, log_max = math.log(self.dt_min), math.log(self.dt_max)
        dt = ops.maximum(ops.exp(u * (log_max - log_min) + log_min), self.dt_init_floor)
        return ops.cast(dt + ops.log(-ops.expm1(-dt)), dtype or "float32")

    def get_config(self):
        return {"dt_min": self.dt_min, "dt_max": self.dt_max,
                "dt_init_floor": self.dt_init_floor, "seed": self.seed}


def torch_linear_initializer(scale=1.0):
    """PyTorch's nn.Linear / nn.Conv1d default, kaiming_uniform(a=sqrt(5)):
    U(+-scale / sqrt(fan_in)). Keras kernels are (fan_in, ...), so fan_in = shape[0]."""
    return keras.initializers.VarianceScaling(scale=scale * scale / 3.0, mode="fan_in",
                                              distribution="uniform")


# ---------------------------------------------------------------- the scan

def _auto_chunk(length):
    """~sqrt(L), a power of two: the two unrolled passes (2 T steps) and the
    carry loop (L / T steps) then cost about the same number of ops."""
    return max(1, min(length, 2 ** round(math.log2(math.sqrt(length))) if length > 1 else 1))


def chunked_selective_scan(x, delta, b, c, a, initial_state=None, chunk_size=None):
    """h_t = exp(delta_t a) h_{t-1} + delta_t b_t x_t;  returns (sum_n c_t h_t, h_L).

    x, delta: (batch, L, D) float32 (delta after softplus); b, c: (batch, L, N);
    a: (D, N), negative; initial_state: (batch, D, N) or None (zeros).

    O(L D N) work, never an (L, D, N) tensor in memory at once outside
    autodiff. The sequence is cut into chunks of T tokens; all chunks advance
    together through T unrolled steps (pass 1: each chunk's state from zero),
    a short loop carries the state across chunk boundaries (L / T steps on
    (batch, D, N) tensors), and pass 2 reruns the T steps from the right
    starting state, contracting with C as it goes. Every op has a static shape,
    so the same code runs under XLA and lowers to TFLite builtins (no WHILE).
    Padding the tail with delta = 0 is exact: exp(0 a) = 1 and delta b x = 0
    leave the state untouched, so the returned h_L is the state after token L.
    """
    length = x.shape[1]
    if length is None:
        raise ValueError("SelectiveScan needs a static sequence length (got None); "
                         "give the model fixed-length batches")
    chunk = min(chunk_size or _auto_chunk(length), length)
    pad = (-length) % chunk
    if pad:
        x, delta, b, c = (ops.pad(t, [[0, 0], [0, pad], [0, 0]]) for t in (x, delta, b, c))
    num_chunks = (length + pad) // chunk

    def chunked(t):  # (batch, L, F) -> (batch, chunks, T, F)
        return ops.reshape(t, (-1, num_chunks, chunk, t.shape[-1]))

    x, delta, b, c = chunked(x), chunked(delta), chunked(b), chunked(c)
    delta_x = delta * x

    def step(h, j):
        u = delta_x[:, :, j, :, None] * b[:, :, j, None, :]           # (batch, chunks, D, N)
        return u if h is None else ops.exp(delta[:, :, j, :, None] * a) * h + u

    local = None
    for j in range(chunk):  # pass 1: every chunk from a zero state
        local = step(local, j)
    decay = ops.exp(ops.sum(delta, axis=2)[..., None] * a)              # (batch, chunks, D, N)
    carry = ops.zeros_like(local[:, 0]) if initial_state is None else initial_state
    entering = []
    for k in range(num_chunks):  # the state entering each chunk
        entering.append(carry)
        carry = decay[:, k] * carry + local[:, k]
    h = ops.stack(entering, axis=1)
    outputs = []
    for j in range(chunk):  # pass 2: from the true entering state, read out with C
        h = ops.exp(delta[:, :, j, :, None] * a) * h + \
            delta_x[:, :, j, :, None] * b[:, :, j, None, :]
        outputs.append(ops.sum(h * c[:, :, j, None, :], axis=-1))
    y = ops.reshape(ops.stack(outputs, axis=2), (-1, num_chunks * chunk, x.shape[-1]))
    return y[:, :length], carry


def naive_selective_scan(x, dt, a_log, b, c, d, initial_state=None):
    """The recurrence one token at a time in float64 NumPy: the tests' reference.
    Takes dt before softplus, like ``SelectiveScan``; returns (y, h_L)."""
    x, dt, a_log, b, c, d = (np.asarray(t, "float64") for t in (x, dt, a_log, b, c, d))
    delta = np.logaddexp(0.0, dt)
    a = -np.exp(a_log)
    h = (np.zeros((x.shape[0], x.shape[2], a.shape[1])) if initial_state is None
         else np.asarray(initial_state, "float64"))
    ys = []
    for t in range(x.shape[1]):
        h = np.exp(delta[:, t, :, None] * a) * h + (delta[:, t] * x[:, t])[..., None] * \
            b[:, t, None, :]
        ys.append((h * c[:, t, None, :]).sum(-1) + d * x[:, t])
    return np.stack(ys, axis=1), h


@keras.saving.register_keras_serializable(package="keras_zoo")
class SelectiveScan(layers.Layer):
    """The selective SSM of Mamba (S6): input-dependent delta, B and C.

    Owns A_log (inner_dim, state_dim), S4D-real initialised so A = -(1..N),
    and the skip D (inner_dim,) = 1. Runs in float32 whatever the dtype
    policy (the reference keeps A_log and D in float32 too).

    ``call(x, dt, b, c, initial_state=None, return_state=False)`` is the
    parallel form (training, prefill): x, dt (batch, L, inner_dim) with dt
    before softplus (``dt_proj`` output, bias included), b, c (batch, L,
    state_dim); see ``chunked_selective_scan`` for the algorithm.
    ``step(x, dt, b, c, state)`` advances one token: x, dt (batch, inner_dim),
    b, c (batch, state_dim), state (batch, inner_dim, state_dim) -> (y, state).
    Both give the same numbers (tests: within 1e-5 of ``naive_selective_scan``).

    Args:
        state_dim: N, 16 in Mamba.
        chunk_size: tokens per chunk of the parallel scan; None picks ~sqrt(L).
    """

    def __init__(self, state_dim=16, chunk_size=None, **kwargs):
        super().__init__(**kwargs)
        self.state_dim = state_dim
        self.chunk_size = chunk_size

    def build(self, x_shape, *args, **kwargs):
        channels = x_shape[-1]
        self.A_log = self.add_weight(name="A_log", shape=(channels, self.state_dim),
                                     initializer=S4DRealInitializer(), dtype="float32")
        self.D = self.add_weight(name="D", shape=(channels,), initializer="ones",
                                 dtype="float32")

    def _a(self):
        return -ops.exp(ops.cast(self.A_log, "float32"))

    def call(self, x, dt, b, c, initial_state=None, return_state=False):
        x, dt, b, c = (ops.cast(t, "float32") for t in (x, dt, b, c))
        if initial_state is not None:
            initial_state = ops.cast(initial_state, "float32")
        y, state = chunked_selective_scan(x, ops.softplus(dt), b, c, self._a(),
                                          initial_state, self.chunk_size)
        y = ops.cast(y + x * ops.cast(self.D, "float32"), self.compute_dtype)
        return (y, state) if return_state else y

    def step(self, x, dt, b, c, state):
        x, dt, b, c, state = (ops.cast(t, "float32") for t in (x, dt, b, c, state))
        delta = ops.softplus(dt)
        state = ops.exp(delta[..., None] * self._a()) * state + \
            (delta * x)[..., None] * b[:, None, :]
        y = ops.sum(state * c[:, None, :], axis=-1) + x * ops.cast(self.D, "float32")
        return ops.cast(y, self.compute_dtype), state

    def compute_output_spec(self, x, dt, b, c, initial_state=None, return_state=False):
        y = keras.KerasTensor(x.shape, dtype=self.compute_dtype)
        if not return_state:
            return y
        return y, keras.KerasTensor((x.shape[0], x.shape[-1], self.state_dim), "float32")

    def get_config(self):
        config = super().get_config()
        config.update(state_dim=self.state_dim, chunk_size=self.chunk_size)
        return config


# ---------------------------------------------------------------- the mixer

@keras.saving.register_keras_serializable(package="keras_zoo")
class MambaMixer(layers.Layer):
    """Mamba's sequence mixer (Gu & Dao 2023, Figure 3), one readable piece per box:

        x, z = in_proj(h)                      2 x inner (inner = expand * width)
        x = SiLU(causal depthwise conv1d(x))   kernel 4, with bias
        dt, B, C = x_proj(x)                   dt_rank = ceil(width / 16), N, N
        y = SelectiveScan(x, dt_proj(dt), B, C)
        out = out_proj(y * SiLU(z))

    Weights and initialisation follow ``mamba_ssm``'s ``Mamba`` module:
    projections without bias (``use_bias``), nn.Linear's U(+-1/sqrt(fan_in))
    default, dt_proj weight U(+-dt_rank^-0.5 * dt_scale) and the inverse-softplus
    dt bias (``DtBiasInitializer``), conv weight and bias U(+-1/sqrt(kernel)),
    out_proj scaled by ``out_proj_scale`` (1/sqrt(num_layers) in MixerModel's
    ``rescale_prenorm_residual``). ``projection_init_stddev`` instead gives every
    projection timm's trunc_normal (``AbsoluteTruncatedNormal``: cut at +-2
    absolute) and zero biases, dt bias included (what SiMBA's ``_init_weights``
    does to its Mamba modules).

    ``bidirectional=True`` adds a second conv / x_proj / dt_proj / A / D that
    scan the reversed sequence, sharing in_proj and out_proj, and averages the
    two (Vision Mamba's "v2" bidirectional block); it has no recurrent step.

    Call: ``mixer(h, padding_mask=None, initial_state=None, return_state=False)``,
    h (batch, L, width); ``initial_state`` = (conv_state, ssm_state) continues a
    sequence (prompt chunks). A padding mask (1 = token, 0 = padding) zeroes padded positions
    before the convolution and before the scan, so left padding leaves the
    state exactly as if the prompt had started at its first token.
    ``return_state`` also returns the recurrent state: the last kernel - 1 conv
    inputs (batch, kernel - 1, inner) and the SSM state (batch, inner, N).
    ``step(h, conv_state, ssm_state)`` with h (batch, width) advances one token.
    """

    def __init__(self, state_dim=16, conv_kernel=4, expand=2, dt_rank=None, use_bias=False,
                 use_conv_bias=True, dt_min=1e-3, dt_max=1e-1, dt_init_floor=1e-4,
                 dt_scale=1.0, out_proj_scale=1.0, projection_init_stddev=None,
                 bidirectional=False, chunk_size=None, **kwargs):
        super().__init__(**kwargs)
        if conv_kernel < 1:
            raise ValueError(f"conv_kernel must be >= 1, got {conv_kernel}")
        self.state_dim = state_dim
        self.conv_kernel = conv_kernel
        self.expand = expand
        self.dt_rank = dt_rank
        self.use_bias = use_bias
        self.use_conv_bias = use_conv_bias
        self.dt_min, self.dt_max, self.dt_init_floor = dt_min, dt_max, dt_init_floor
        self.dt_scale = dt_scale
        self.out_proj_scale = out_proj_scale
        self.projection_init_stddev = projection_init_stddev
        self.bidirectional = bidirectional
        self.chunk_size = chunk_size

    @staticmethod
    def inner_dim_for(width, expand):
        inner = expand * width
        if inner != int(inner):
            raise ValueError(f"expand={expand} x width {width} = {inner} is not a whole "
                             "number of inner channels; choose a width that expand divides into")
        return int(inner)

    def build(self, input_shape):
        width = input_shape[-1]
        self.width = width
        self.inner_dim = inner = self.inner_dim_for(width, self.expand)
        self.rank = self.dt_rank or math.ceil(width / 16)
        std = self.projection_init_stddev
        kw = {"dtype": self.dtype_policy}

        def dense(units, bias, name, kernel_init, bias_init="zeros"):
            if std is not None:
                kernel_init, bias_init = AbsoluteTruncatedNormal(std), "zeros"
            return layers.Dense(units, use_bias=bias, kernel_initializer=kernel_init,
                                bias_initializer=bias_init, name=name, **kw)

        self.in_proj = dense(2 * inner, self.use_bias, "in_proj", torch_linear_initializer())
        self.in_proj.build(input_shape)
        dt_limit = self.rank ** -0.5 * self.dt_scale
        for suffix in self._suffixes():
            setattr(self, "conv1d_kernel" + suffix, self.add_weight(
                name="conv1d_kernel" + suffix, shape=(self.conv_kernel, inner),
                initializer=torch_linear_initializer()))
            if self.use_conv_bias:
                setattr(self, "conv1d_bias" + suffix, self.add_weight(
                    name="conv1d_bias" + suffix, shape=(inner,),
                    initializer=keras.initializers.RandomUniform(
                        -self.conv_kernel ** -0.5, self.conv_kernel ** -0.5)))
            x_proj = dense(self.rank + 2 * self.state_dim, False, "x_proj" + suffix,
                           torch_linear_initializer())
            x_proj.build((None, None, inner))
            dt_proj = dense(inner, True, "dt_proj" + suffix,
                            keras.initializers.RandomUniform(-dt_limit, dt_limit),
                            DtBiasInitializer(self.dt_min, self.dt_max, self.dt_init_floor))
            dt_proj.build((None, None, self.rank))
            scan = SelectiveScan(self.state_dim, self.chunk_size, name="scan" + suffix, **kw)
            scan.build((None, None, inner))
            setattr(self, "x_proj" + suffix, x_proj)
            setattr(self, "dt_proj" + suffix, dt_proj)
            setattr(self, "scan" + suffix, scan)
        self.out_proj = dense(width, self.use_bias, "out_proj",
                              torch_linear_initializer(self.out_proj_scale))
        self.out_proj.build(input_shape[:-1] + (inner,))

    def _suffixes(self):
        return ("", "_backward") if self.bidirectional else ("",)

    def _parts(self, suffix):
        """(conv kernel, conv bias or None, x_proj, dt_proj, scan) of one scan direction."""
        return (getattr(self, "conv1d_kernel" + suffix), getattr(self, "conv1d_bias" + suffix, None),
                getattr(self, "x_proj" + suffix), getattr(self, "dt_proj" + suffix),
                getattr(self, "scan" + suffix))

    def _ssm_inputs(self, x, x_proj, dt_proj):
        dt, b, c = ops.split(x_proj(x), [self.rank, self.rank + self.state_dim], axis=-1)
        return dt_proj(dt), b, c

    def _direction(self, x, keep, suffix, return_state, initial_state=None):
        conv_kernel, conv_bias, x_proj, dt_proj, scan = self._parts(suffix)
        length = x.shape[1]
        k = self.conv_kernel
        if initial_state is None:
            padded = ops.pad(x, [[0, 0], [k - 1, 0], [0, 0]])
        else:  # continue from a state: the window starts with the last k - 1 inputs
            padded = ops.concatenate([ops.cast(initial_state[0], x.dtype), x], axis=1)
        kernel = ops.cast(conv_kernel, x.dtype)
        # Causal depthwise conv as k shifted multiply-adds: PAD/SLICE/MUL/ADD in
        # TFLite, and the same arithmetic as the recurrent step's window sum.
        conv = padded[:, 0:length] * kernel[0]
        for i in range(1, k):
            conv = conv + padded[:, i:i + length] * kernel[i]
        if conv_bias is not None:
            conv = conv + ops.cast(conv_bias, x.dtype)
        x = ops.silu(conv)
        if keep is not None:
            x = x * keep
        dt, b, c = self._ssm_inputs(x, x_proj, dt_proj)
        if not return_state:
            return scan(x, dt, b, c), None
        y, ssm_state = scan(x, dt, b, c, return_state=True,
                            initial_state=None if initial_state is None else initial_state[1])
        return y, (padded[:, length:], ssm_state)

    def call(self, hidden, padding_mask=None, initial_state=None, return_state=False):
        if (return_state or initial_state is not None) and self.bidirectional:
            raise ValueError("a bidirectional MambaMixer sees the whole sequence; it has no "
                             "recurrent state")
        if padding_mask is not None and initial_state is not None:
            raise ValueError("padding_mask is for prompts read from the empty state; continue "
                             "from a state with unpadded tokens")
        x, z = ops.split(self.in_proj(hidden), 2, axis=-1)
        keep = None
        if padding_mask is not None:
            keep = ops.cast(padding_mask, x.dtype)[..., None]
            x = x * keep
        y, state = self._direction(x, keep, "", return_state, initial_state)
        if self.bidirectional:
            flipped_keep = None if keep is None else ops.flip(keep, axis=1)
            y_backward, _ = self._direction(ops.flip(x, axis=1), flipped_keep, "_backward", False)
            y = (y + ops.flip(y_backward, axis=1)) * ops.cast(0.5, y.dtype)
        out = self.out_proj(y * ops.silu(z))
        return (out, *state) if return_state else out

    def step(self, hidden, conv_state, ssm_state):
        """One token: hidden (batch, width), conv_state (batch, kernel - 1, inner),
        ssm_state (batch, inner, N) -> (out (batch, width), conv_state, ssm_state)."""
        if self.bidirectional:
            raise ValueError("a bidirectional MambaMixer has no recurrent step")
        conv_kernel, conv_bias, x_proj, dt_proj, scan = self._parts("")
        x, z = ops.split(self.in_proj(hidden), 2, axis=-1)
        window = ops.concatenate([ops.cast(conv_state, x.dtype), x[:, None, :]], axis=1)
        conv = ops.sum(window * ops.cast(conv_kernel, x.dtype), axis=1)
        if conv_bias is not None:
            conv = conv + ops.cast(conv_bias, x.dtype)
        x = ops.silu(conv)
        dt, b, c = self._ssm_inputs(x, x_proj, dt_proj)
        y, ssm_state = scan.step(x, dt, b, c, ssm_state)
        return self.out_proj(y * ops.silu(z)), window[:, 1:], ssm_state

    def state_shapes(self):
        """Per-sequence shapes of (conv_state, ssm_state)."""
        return (self.conv_kernel - 1, self.inner_dim), (self.inner_dim, self.state_dim)

    def compute_output_spec(self, hidden, padding_mask=None, initial_state=None,
                            return_state=False):
        out = keras.KerasTensor(hidden.shape, dtype=self.compute_dtype)
        if not return_state:
            return out
        inner = self.inner_dim_for(hidden.shape[-1], self.expand)
        return (out,
                keras.KerasTensor((hidden.shape[0], self.conv_kernel - 1, inner),
                                  self.compute_dtype),
                keras.KerasTensor((hidden.shape[0], inner, self.state_dim), "float32"))

    def get_config(self):
        config = super().get_config()
        config.update(
            state_dim=self.state_dim, conv_kernel=self.conv_kernel, expand=self.expand,
            dt_rank=self.dt_rank, use_bias=self.use_bias, use_conv_bias=self.use_conv_bias,
            dt_min=self.dt_min, dt_max=self.dt_max, dt_init_floor=self.dt_init_floor,
            dt_scale=self.dt_scale, out_proj_scale=self.out_proj_scale,
            projection_init_stddev=self.projection_init_stddev,
            bidirectional=self.bidirectional, chunk_size=self.chunk_size)
        return config
