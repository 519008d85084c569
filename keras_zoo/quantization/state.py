"""Fake quantization of activations (tracked ranges) and of kernels (from the weights)."""

import keras
from keras import ops

MODES = ("qat", "export", "float", "calibrate")


def fake_quant(x, lo, hi, narrow_range=False, axis=None, num_bits=8):
    """``keras.quantizers.fake_quant_with_min_max_vars``: on TensorFlow it is the
    FakeQuantWithMinMaxVars(PerChannel) op, which the TFLite converter turns
    into integer kernels; its gradient is the straight-through estimator."""
    return keras.quantizers.fake_quant_with_min_max_vars(
        x, lo, hi, num_bits=num_bits, narrow_range=narrow_range, axis=axis)


def quantize_kernel(kernel, per_channel, depthwise=False):
    """Symmetric [-m, m] kernel quantization with 255 levels (int8 weights have
    zero point 0 and no -128), m = max |w| per output channel or per kernel.

    This is exactly what the TFLite converter does to float weights of an
    int8 FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D (scale m / 127 per
    output channel), so a trained kernel rounds the same way in the file.
    ``depthwise``: a (h, w, in, multiplier) kernel has in * multiplier output
    channels.
    """
    k = ops.cast(kernel, "float32")
    shape = tuple(k.shape)
    if depthwise:
        k = ops.reshape(k, shape[:-2] + (shape[-2] * shape[-1],))
    if per_channel:
        m = ops.max(ops.abs(k), axis=tuple(range(len(k.shape) - 1)))
    else:
        m = ops.max(ops.abs(k))
    # A zero channel (a pruned one, a zero-initialised head) keeps a tiny range
    # rather than a zero one, which FakeQuant would divide by.
    m = ops.stop_gradient(ops.maximum(m, 1e-12))
    q = fake_quant(k, -m, m, narrow_range=True, axis=-1 if per_channel else None)
    if depthwise:
        q = ops.reshape(q, shape)
    return ops.cast(q, kernel.dtype)


@keras.saving.register_keras_serializable(package="keras_zoo")
class QuantizationState(keras.layers.Layer):
    """The activation ranges of a quantize-aware model: a (min, max) pair per
    quantizer, named after the layer input/output it sits on, and the pruning
    masks. It is not in the functional graph: the wrapped layers call
    ``fake_quantize(index, x)``; the model tracks it as ``model.qat_state``, so its
    variables are saved and loaded with the model's (``.keras``, presets,
    checkpoints).

    ``mode`` (a Python attribute, read when a function is traced): "qat"
    (fake quantization, training updates the ranges), "export" (the graph
    written for the TFLite converter), "float" (no quantization at all),
    "calibrate" (float, recording each quantizer's batch extremes; eager only).
    """

    def __init__(self, names, qat_config, pruned=(), **kwargs):
        super().__init__(**kwargs)
        self.names = list(names)
        self.qat_config = dict(qat_config)
        self.pruned = [list(p) for p in pruned]
        learned = qat_config["ranges"] == "learned"
        self.minimums, self.maximums = [], []
        for i in range(len(self.names)):
            for store, which in ((self.minimums, "min"), (self.maximums, "max")):
                store.append(self.add_weight(
                    name=f"{which}_{i}", shape=(), initializer="zeros", trainable=learned,
                    aggregation="mean", autocast=False))
        # Pruning: one 0/1 mask per pruned kernel (same shape), updated by
        # quantization.PruningCallback; kernels compute as kernel * mask.
        self.masks = [self.add_weight(name=f"mask_{i}", shape=tuple(shape), initializer="ones",
                                      trainable=False, aggregation="only_first_replica",
                                      autocast=False)
                      for i, (_, shape) in enumerate(self.pruned)]
        self.mode = "qat"
        self.observed = None
        self.built = True

    @property
    def momentum(self):
        return self.qat_config["momentum"]

    def fake_quantize(self, index, x, training=False, update=True):
        """``x`` fake-quantized with range ``index``; ``update=False``: a second
        use of a range (a concatenation sharing its input's scale), which
        calibration widens but training does not move."""
        mode = self.mode
        if mode == "float":
            return x
        if mode == "calibrate":
            xf = ops.cast(x, "float32")
            self.observed[index].append((float(ops.convert_to_numpy(ops.min(xf))),
                                         float(ops.convert_to_numpy(ops.max(xf)))))
            return x
        lo_var, hi_var = self.minimums[index], self.maximums[index]
        if training and update and mode == "qat" and \
                self.qat_config["ranges"] == "moving_average":
            xf = ops.stop_gradient(ops.cast(x, "float32"))
            batch_lo = ops.minimum(ops.min(xf), 0.0)
            batch_hi = ops.maximum(ops.max(xf), 0.0)
            # Never trained and never calibrated (all zero): start at this batch.
            fresh = ops.logical_and(ops.equal(lo_var, 0.0), ops.equal(hi_var, 0.0))
            m = self.momentum
            lo = ops.where(fresh, batch_lo, lo_var * m + batch_lo * (1.0 - m))
            hi = ops.where(fresh, batch_hi, hi_var * m + batch_hi * (1.0 - m))
            lo_var.assign(lo)
            hi_var.assign(hi)
        else:
            lo, hi = ops.convert_to_tensor(lo_var), ops.convert_to_tensor(hi_var)
        # TFLite activations are asymmetric int8 with zero exactly representable.
        lo = ops.minimum(lo, 0.0)
        hi = ops.maximum(hi, lo + 1e-6)
        return fake_quant(x, lo, hi)

    def load_own_variables(self, store):
        if len(store.keys()) != len(self.variables):
            raise ValueError(
                f"the saved quantization state has {len(store.keys())} variables, this model's "
                f"has {len(self.variables)} ({len(self.names)} activation ranges, "
                f"{len(self.masks)} pruning masks): it was saved by another model or another "
                "keras_zoo version's QAT plan; quantize the float model again")
        super().load_own_variables(store)

    def ranges(self):
        """{quantizer name: (min, max)} as floats."""
        return {n: (float(ops.convert_to_numpy(lo)), float(ops.convert_to_numpy(hi)))
                for n, lo, hi in zip(self.names, self.minimums, self.maximums)}

    def mask_of(self, path):
        for (p, _), mask in zip(self.pruned, self.masks):
            if p == path:
                return mask
        return None

    def get_config(self):
        config = super().get_config()
        config.update(names=self.names, qat_config=self.qat_config, pruned=self.pruned)
        return config
