"""Activations with hand-written gradients where autodiff's are slow."""

import keras
from keras import ops

_SQRT_HALF = 0.7071067811865476  # 1 / sqrt(2)
_INV_SQRT_2PI = 0.3989422804014327  # 1 / sqrt(2 pi)
_SQRT_2_OVER_PI = 0.7978845608028654  # sqrt(2 / pi)
_TANH_CUBIC = 0.044715


def fused(fn):
    """``fn`` compiled as one XLA cluster on the TensorFlow backend.

    For chains of elementwise ops that TensorFlow would otherwise run as one
    kernel per op (each a full pass over memory) when the surrounding step is
    not XLA-compiled, e.g. on CPU, where Keras' ``jit_compile="auto"`` turns
    XLA off. Inside an XLA-compiled step (TPU, ``jit_compile=True``) it is
    simply inlined. Use it for code with no variables (gradients, not layers),
    so it never shows up in exported inference graphs.
    """
    if keras.backend.backend() != "tensorflow":
        return fn  # JAX compiles everything already; torch has no equivalent
    import tensorflow as tf

    return tf.function(fn, jit_compile=True, reduce_retracing=True)


@fused
def _gelu_grad(x, upstream):
    # d/dx x * Phi(x) = Phi(x) + x * phi(x).
    cdf = 0.5 * ops.erf(x * _SQRT_HALF) + 0.5
    pdf = ops.exp(-0.5 * ops.square(x)) * _INV_SQRT_2PI
    return upstream * (cdf + x * pdf)


@keras.saving.register_keras_serializable(package="keras_zoo")
def gelu(x):
    """Exact GELU, x * Phi(x) (Hendrycks & Gimpel 2016), as in ViT (flax's
    ``nn.gelu(approximate=False)``) and Hugging Face's BERT (google-research/bert's
    own ``modeling.py`` uses the tanh form: ``gelu_approximate``).

    The forward pass is ``keras.activations.gelu(x, approximate=False)``, op
    for op, so outputs are identical and exporters still recognise the
    pattern (TFLite lowers it to one GELU kernel). Only the gradient is
    written out, d/dx = Phi(x) + x * phi(x), as one fused XLA kernel. Autodiff
    through Keras' ``0.5 * x * erfc(-x / sqrt(2))`` runs ~10 elementwise ops
    (erfc's derivative among them) one kernel each; for the GELUs of a
    ViT-S/16 training step at batch 16 on CPU this takes forward + backward
    from ~455 to ~130 ms of CPU time (``python -m benchmarks.speedups``).
    """
    return _with_gradient(x, lambda x: keras.activations.gelu(x, approximate=False), _gelu_grad)


def _with_gradient(x, forward, gradient):
    """``forward(x)`` whose backward pass is ``gradient(x, upstream)``."""

    @ops.custom_gradient
    def fn(x):
        def grad(*args, upstream=None):
            # TensorFlow passes the upstream gradient positionally, JAX and
            # torch by keyword.
            upstream = args[0] if upstream is None else upstream
            return gradient(x, upstream)

        return forward(x), grad

    return fn(x)


@fused
def _gelu_approximate_grad(x, upstream):
    # y = x/2 (1 + tanh u) = x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3):
    # dy/dx = s + x s (1 - s) 2 du/dx with s = sigmoid(2u) (the sigmoid form
    # keeps the far negative tail, where 1 + tanh u rounds to 0, accurate).
    x2 = ops.square(x)
    s = ops.sigmoid(2.0 * _SQRT_2_OVER_PI * x * (1.0 + _TANH_CUBIC * x2))
    du = 2.0 * _SQRT_2_OVER_PI * (1.0 + 3.0 * _TANH_CUBIC * x2)
    return upstream * (s + x * s * (1.0 - s) * du)


@keras.saving.register_keras_serializable(package="keras_zoo")
def gelu_approximate(x):
    """GELU's tanh approximation, x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))):
    GPT-2's ``gelu`` (Hugging Face's "gelu_new"). Forward is Keras'
    ``gelu(approximate=True)`` op for op (TFLite fuses it into one GELU
    kernel); the gradient is one fused XLA kernel, as for ``gelu``."""
    return _with_gradient(x, lambda x: keras.activations.gelu(x, approximate=True),
                          _gelu_approximate_grad)


_ZOO_ACTIVATIONS = {"gelu": gelu, "gelu_approximate": gelu_approximate}


def get(identifier):
    """``keras.activations.get`` that maps "gelu" to the exact GELU above and
    "gelu_approximate" to its tanh form."""
    if isinstance(identifier, str) and identifier in _ZOO_ACTIVATIONS:
        return _ZOO_ACTIVATIONS[identifier]
    return keras.activations.get(identifier)
