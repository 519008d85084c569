"""What the TFLite converter does with fake-quantized Dense kernels: the facts
keras_zoo.quantization's export arrangement rests on (TF 2.21). If a
TensorFlow upgrade changes them, these fail and the README's choice needs
revisiting."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from export import tflite


class DenseProbe(keras.Model):
    """fq(x) -> x @ kernel -> fq: ``kernel_mode`` "per_channel" / "per_tensor"
    fake-quantizes the kernel, "float" leaves it to the converter."""

    def __init__(self, kernel_mode):
        super().__init__()
        self.kernel_mode = kernel_mode
        self.kernel = self.add_weight(shape=(16, 32), initializer="glorot_uniform")

    def call(self, x):
        fq = keras.quantizers.fake_quant_with_min_max_vars
        x = fq(x, -3.0, 3.0)
        k = self.kernel
        if self.kernel_mode == "per_channel":
            m = keras.ops.max(keras.ops.abs(k), axis=0)
            k = fq(k, -m, m, narrow_range=True, axis=-1)
        elif self.kernel_mode == "per_tensor":
            m = keras.ops.max(keras.ops.abs(k))
            k = fq(k, -m, m, narrow_range=True)
        return fq(keras.ops.matmul(x, k), -4.0, 4.0)


def _convert(model, path):
    model(np.zeros((1, 16), "float32"))  # builds it
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", lambda x: {"y": model(x)},
                         input_signature=[tf.TensorSpec((1, 16), "float32", name="x")])
    archive.write_out(path, verbose=False)
    return tflite.convert_qat(path)


def _kernel_scales(content):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    return [len(t["quantization_parameters"]["scales"]) for t in interpreter.get_tensor_details()
            if t["dtype"] == np.int8 and tuple(t["shape"]) == (32, 16)]


def test_dense_kernel_fake_quant_per_tensor_converts_per_channel_does_not(tmp_path):
    content = _convert(DenseProbe("per_tensor"), str(tmp_path / "t"))
    assert tflite.op_precisions(content)["FULLY_CONNECTED"] == {"int8": 1}
    assert _kernel_scales(content) == [1]
    with pytest.raises(tflite.ExportError, match="mismatched quantized axes"):
        _convert(DenseProbe("per_channel"), str(tmp_path / "c"))


def test_float_kernel_between_ranges_is_quantized_per_channel_by_the_converter(tmp_path):
    model = DenseProbe("float")
    content = _convert(model, str(tmp_path / "f"))
    assert tflite.op_precisions(content)["FULLY_CONNECTED"] == {"int8": 1}
    assert _kernel_scales(content) == [32]
    # ... with the rounding a per-channel fake quant simulates (to one output step).
    simulated = DenseProbe("per_channel")
    simulated.kernel.assign(keras.ops.convert_to_numpy(model.kernel))
    x = np.random.default_rng(0).standard_normal((8, 1, 16)).astype("float32")
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=content).get_signature_runner()
    for row in x:
        np.testing.assert_allclose(runner(x=row)["y"], np.asarray(simulated(row)),
                                   atol=8.0 / 255 + 1e-6)
