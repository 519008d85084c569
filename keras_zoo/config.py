"""Runtime choices that change how a model computes, never what it computes.

    import keras_zoo.config
    keras_zoo.config.set_attention_implementation("fused")   # or "matmul", "auto"

Attention (``keras_zoo.layers.MultiHeadAttention``) has two lowerings with the
same weights and the same numbers (to float rounding; tests/layers/test_attention.py
and tests/backends check them against each other on CPU):

* ``"matmul"``: softmax(q k^T / sqrt(d)) v as two batched matmuls on
  heads-first tensors. The fastest form measured on CPU without XLA
  (TensorFlow), and the one the TFLite exporter lowers (plain BATCH_MATMUL
  and SOFTMAX, which XNNPACK delegates).
* ``"fused"``: ``keras.ops.dot_product_attention``, the backend's own kernel:
  on JAX with a GPU, cuDNN flash attention where its conditions hold
  (float16/bfloat16, supported head sizes), on TPU the Pallas flash kernel.
  Attention dropout during training falls back to ``"matmul"`` (the fused op
  has no dropout).
* ``"auto"`` (default): ``"fused"`` on the JAX backend when JAX's default
  device is a GPU or TPU, ``"matmul"`` everywhere else (CPU, TensorFlow, TFLite).

The fused kernel's speed-up on a GPU has not been measured in this repository
(no GPU was available; ``benchmarks/gpu_train.py --attention=fused|matmul``
measures it), so ``"auto"`` follows what the backends document. The
environment variable ``KERAS_ZOO_ATTENTION`` sets the initial choice.
"""

import os

import keras

ATTENTION_IMPLEMENTATIONS = ("auto", "fused", "matmul")


def _checked(name):
    if name not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attention implementation must be one of "
                         f"{ATTENTION_IMPLEMENTATIONS}, got {name!r}")
    return name


_attention = _checked(os.environ.get("KERAS_ZOO_ATTENTION", "auto"))


def set_attention_implementation(name):
    """``"auto"`` | ``"fused"`` | ``"matmul"``; takes effect the next time a
    model is traced (call it before building or compiling)."""
    global _attention
    _attention = _checked(name)


def attention_implementation():
    """The current setting (``"auto"`` unresolved)."""
    return _attention


def use_fused_attention():
    """Whether attention traced now uses ``keras.ops.dot_product_attention``."""
    if _attention != "auto":
        return _attention == "fused"
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.default_backend() in ("gpu", "tpu")
