"""Simba as a TFLite file: builtins only (no WHILE, no flex), float32 logits within
1e-4 of Keras, and the dynamic-int8 file's top-1 agreement reported."""

import numpy as np
import pytest

import keras_zoo
from export import export_tflite
from export.verify import _interpreter, tflite_outputs


@pytest.mark.slow
def test_simba_tflite_matches_keras_with_builtins_only(tmp_path):
    model = keras_zoo.from_preset("simba_tiny_digits")
    rng = np.random.default_rng(0)
    model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) if w.ndim else w
                       for w in model.get_weights()])
    paths = {q: str(tmp_path / f"{q}.tflite") for q in ("none", "dynamic_int8")}
    results = export_tflite(model, paths)
    for result in results.values():
        ops = result["ops"]
        assert ops["flex"] == [] and ops["custom"] == [] and "WHILE" not in ops["builtin"]
    x = rng.random((8, 32, 32, 1)).astype("float32")
    expected = np.asarray(model(x))
    runner = _interpreter(paths["none"]).get_signature_runner("serving_default")
    (name,) = runner.get_input_details()
    for q, path in paths.items():
        (got,) = tflite_outputs(path, "serving_default", {name: x}).values()
        assert got.shape == expected.shape
        if q == "none":
            np.testing.assert_allclose(got, expected, atol=1e-4)
        else:
            agreement = float(np.mean(got.argmax(-1) == expected.argmax(-1)))
            print(f"simba dynamic-int8 top-1 agreement {agreement:.2f}, "
                  f"max |logit diff| {np.max(np.abs(got - expected)):.4f}")
