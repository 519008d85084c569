"""keras_zoo.config.set_attention_implementation: the fused lowering
(keras.ops.dot_product_attention) and the two-matmul one give the same numbers
(here under TensorFlow on CPU; tests/backends/jax_cases.py does it on JAX),
"auto" keeps the matmuls off JAX GPU/TPU, and a bad name is one clear error."""

import keras
import numpy as np
import pytest

import keras_zoo
from keras_zoo import config
from keras_zoo.layers import MultiHeadAttention


@pytest.fixture(autouse=True)
def _restore():
    yield
    config.set_attention_implementation("auto")


def _both(fn):
    outs = {}
    for impl in ("matmul", "fused"):
        config.set_attention_implementation(impl)
        outs[impl] = fn()
    return outs


@pytest.mark.parametrize("case", ["self", "causal", "padding", "padding_causal", "cross",
                                  "fully_masked_row"])
def test_fused_and_matmul_attention_agree(case):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 24)).astype("float32")  # head size 6: scale not a power of 2
    args, kwargs = (x,), {}
    if case in ("causal", "padding_causal"):
        kwargs["use_causal_mask"] = True
    if case.startswith("padding"):
        mask = np.ones((2, 5), bool)
        mask[1, 3:] = False
        kwargs["attention_mask"] = mask
    if case == "fully_masked_row":
        mask = np.ones((2, 5, 5), bool)
        mask[1, 2] = False  # query 2 of image 1 may see nothing: uniform, not NaN
        kwargs["attention_mask"] = mask
    if case == "cross":
        args = (x, rng.normal(size=(2, 7, 24)).astype("float32"))
    layer = MultiHeadAttention(4)
    outs = _both(lambda: keras.ops.convert_to_numpy(layer(*args, **kwargs)))
    assert np.all(np.isfinite(outs["fused"]))
    np.testing.assert_allclose(outs["fused"], outs["matmul"], rtol=1e-5, atol=1e-6)


def test_a_vit_gives_the_same_logits_either_way():
    model = keras_zoo.from_preset("vit_tiny_digits")
    for v in model.trainable_variables:  # the head starts at zero: make it matter
        v.assign(v + np.random.default_rng(0).normal(0, 0.02, v.shape).astype("float32"))
    x = np.random.default_rng(1).random((2, 32, 32, 1)).astype("float32")
    outs = _both(lambda: keras.ops.convert_to_numpy(model(x)))
    np.testing.assert_allclose(outs["fused"], outs["matmul"], rtol=1e-5, atol=1e-6)


def test_auto_is_matmul_on_tensorflow_and_bad_names_are_clear_errors():
    assert config.attention_implementation() == "auto"
    assert not config.use_fused_attention()
    config.set_attention_implementation("fused")
    assert config.use_fused_attention()
    with pytest.raises(ValueError, match=r"one of \('auto', 'fused', 'matmul'\), got 'flash'"):
        config.set_attention_implementation("flash")
    assert config.attention_implementation() == "fused"  # unchanged by the bad call


def test_cached_decoding_agrees_either_way():
    """Prefill 3 tokens, then 2 one-token steps over the key/value cache."""
    x = np.random.default_rng(2).normal(size=(2, 5, 24)).astype("float32")
    layer = MultiHeadAttention(4)
    layer(x, use_causal_mask=True)  # builds

    def decode():
        cache = layer.init_cache(batch_size=2, max_length=7)
        out, cache = layer(x[:, :3], use_causal_mask=True, cache=cache, cache_index=0)
        outs = [out]
        for t in (3, 4):
            out, cache = layer(x[:, t:t + 1], use_causal_mask=True, cache=cache,
                               cache_index=t)
            outs.append(out)
        return keras.ops.convert_to_numpy(keras.ops.concatenate(outs, axis=1))

    outs = _both(decode)
    np.testing.assert_allclose(outs["fused"], outs["matmul"], rtol=1e-5, atol=1e-6)
    config.set_attention_implementation("matmul")
    np.testing.assert_allclose(outs["matmul"], keras.ops.convert_to_numpy(
        layer(x, use_causal_mask=True)), rtol=1e-5, atol=1e-6)  # = the full causal pass
