"""Layer normalization (Ba et al. 2016) spelled out for integer inference."""

import keras
from keras import ops

INVERSE_STDDEV_SCOPE = "inverse_stddev"


@keras.saving.register_keras_serializable(package="keras_zoo")
class LayerNormalization(keras.layers.LayerNormalization):
    """LayerNorm, (x - mean) / sqrt(var + eps) * gamma + beta, over the last axis.

    Same weights (``gamma``, ``beta``), config and numbers as
    ``keras.layers.LayerNormalization``, so checkpoints load either way; only
    the lowering differs. Keras computes ``x * inv + (beta - mean * inv)``
    (a NEG and a SQUARED_DIFFERENCE in TFLite, neither with an int8 XNNPACK
    kernel). Written as mean -> subtract -> multiply -> mean -> rsqrt ->
    multiply, every op but RSQRT has an int8 kernel, and RSQRT acts on one
    number per token, cheap to keep in float. Computes in float32 under
    mixed precision, like Keras.
    """

    def call(self, inputs):
        if self.rms_scaling or list(self.axis) not in ([-1], [len(inputs.shape) - 1]):
            return super().call(inputs)
        x = ops.cast(inputs, "float32")
        centered = x - ops.mean(x, axis=-1, keepdims=True)
        # A named scope lets the exporter keep exactly these few ops in float
        # (see export.tflite.INT8_FLOAT_SCOPES): the variance of an int8
        # tensor and the tiny epsilon quantize badly, and they cost nothing.
        with keras.name_scope(INVERSE_STDDEV_SCOPE):
            variance = ops.mean(centered * centered, axis=-1, keepdims=True)
            inverse_stddev = ops.rsqrt(variance + self.epsilon)
        outputs = centered * inverse_stddev
        if self.scale:
            outputs = outputs * ops.cast(self.gamma, "float32")
        if self.center:
            outputs = outputs + ops.cast(self.beta, "float32")
        return ops.cast(outputs, self.compute_dtype)
