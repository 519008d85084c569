"""Quantization-aware training for Keras 3 zoo models, exported as integer TFLite.

    from keras_zoo import quantization
    qat = quantization.quantize_aware(model, calibration_data=x_train[:512])
    qat.fit(...)                       # fake-quantized kernels and activations
    qat.save_to_preset("qat_run")      # config.json carries a "qat" entry; data only
    # python -m export.export --preset=qat_run --quantization=int8   (no representative data)

See the README section "Quantization-aware training" for what is simulated and why.
"""

from keras_zoo.quantization.config import DEFAULTS, FLOAT_LAYERS, QuantizationError, resolve
from keras_zoo.quantization.core import (
    apply,
    calibrate,
    describe,
    for_training,
    get_state,
    is_quantize_aware,
    mode,
    quantize_aware,
)
from keras_zoo.quantization.pruning import PruningCallback, sparsity_of, update_masks
from keras_zoo.quantization.state import QuantizationState, fake_quant, quantize_kernel

__all__ = ["DEFAULTS", "FLOAT_LAYERS", "PruningCallback", "QuantizationError",
           "QuantizationState", "apply", "calibrate", "describe", "fake_quant", "for_training",
           "get_state", "is_quantize_aware", "mode", "quantize_aware", "quantize_kernel",
           "resolve", "sparsity_of", "update_masks"]
