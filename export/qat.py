"""Export of quantize-aware models (keras_zoo.quantization): the SavedModel
is written in the mode the target precision needs, then converted.

* int8: fake-quantized activations, float kernels (the converter quantizes
  them per output channel, as training simulated; per-tensor kernels keep
  their FakeQuant), BatchNorm folded: ``tflite.convert_qat``, no
  representative data.
* float32 / float16 / dynamic int8: the same network with quantization off
  (the fine-tuned float weights, BatchNorm folded), converted as any model.
"""

import os

from export import tflite


def is_quantize_aware(model):
    from keras_zoo import quantization

    return quantization.is_quantize_aware(model)


def keras_mode(quantization, format="tflite"):
    """The quantization mode whose Keras outputs an exported file reproduces
    (a SavedModel is the quantize-aware model itself)."""
    return "qat" if quantization == "int8" or format == "saved_model" else "float"


def check_saved_model_int8(model):
    if is_quantize_aware(model):
        raise tflite.ExportError(
            "--format=saved_model --quantization=int8 is Keras' own Model.quantize, not for a "
            "quantize-aware model: use --format=tflite --quantization=int8 (integer kernels), "
            "or --quantization=none (a SavedModel of the fake-quantized model)")


def convert(model, specs, work, quantization, write_saved_model, int8_io=False,
            allow_flex=False, float_ops=tflite.INT8_FLOAT_OPS):
    from keras_zoo import quantization as qat

    mode = "export" if quantization == "int8" else "float"
    saved = os.path.join(work, f"{mode}_saved_model")
    if not os.path.exists(saved):
        with qat.mode(model, mode):
            write_saved_model(saved, specs)
    if quantization == "int8":
        _check_calibrated(model)
        return tflite.convert_qat(saved, int8_io, allow_flex, sorted(specs), float_ops)
    return tflite.convert(saved, quantization, None, int8_io=int8_io, allow_flex=allow_flex,
                          signature_keys=sorted(specs))


def _check_calibrated(model):
    from keras_zoo import quantization as qat

    flat = [n for n, (lo, hi) in qat.get_state(model).ranges().items() if lo == hi == 0.0]
    if flat:
        raise tflite.ExportError(
            f"{len(flat)} activation range(s) of this quantize-aware model were never set "
            f"(e.g. {flat[0]!r}): calibrate it (quantization.calibrate) or fine-tune it first")


def reference_mode(model, quantization, format="tflite"):
    """Context in which ``model``'s Keras outputs are what the exported file
    should reproduce (a no-op for ordinary models)."""
    import contextlib

    if not is_quantize_aware(model):
        return contextlib.nullcontext()
    from keras_zoo import quantization as qat

    return qat.mode(model, keras_mode(quantization, format))
