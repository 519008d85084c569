"""Activations with hand-written gradients where autodiff's are slow."""

import keras
from keras import ops

_SQRT_HALF = 0.7071067811865476  # 1 / sqrt(2)
_INV_SQRT_2PI = 0.3989422804014327  # 1 / sqrt(2 pi)


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
    """Exact GELU, x * Phi(x) (Hendrycks & Gimpel 2016), as in ViT and BERT.

    The forward pass is ``keras.activations.gelu(x, approximate=False)``, op
    for op, so outputs are identical and exporters still recognise the
    pattern (TFLite lowers it to one GELU kernel). Only the gradient is
    written out, d/dx = Phi(x) + x * phi(x), as one fused XLA kernel. Autodiff
    through Keras' ``0.5 * x * erfc(-x / sqrt(2))`` runs ~10 elementwise ops
    (erfc's derivative among them) one kernel each; for the GELUs of a
    ViT-S/16 training step at batch 16 on CPU this takes forward + backward
    from ~455 to ~130 ms of CPU time (``python -m benchmarks.speedups``).
    """

    @ops.custom_gradient
    def _gelu(x):
        def grad(*args, upstream=None):
            # TensorFlow passes the upstream gradient positionally, JAX and
            # torch by keyword.
            upstream = args[0] if upstream is None else upstream
            return _gelu_grad(x, upstream)

        return keras.activations.gelu(x, approximate=False), grad

    return _gelu(x)


def get(identifier):
    """``keras.activations.get`` that maps "gelu" to the exact GELU above."""
    if identifier == "gelu":
        return gelu
    return keras.activations.get(identifier)
