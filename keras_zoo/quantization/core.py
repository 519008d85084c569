"""quantize_aware: a model's layers, computing with fake-quantized kernels and activations."""

import contextlib

import keras
import numpy as np
from keras import ops

from keras_zoo.quantization import graph
from keras_zoo.quantization.config import QuantizationError, resolve
from keras_zoo.quantization.state import MODES, QuantizationState, fake_quant, quantize_kernel

STATE_ATTR = "qat_state"


# ---------------------------------------------------------------- building

def apply(model, config):
    """Makes ``model`` quantize-aware in place (its config's ``qat`` entry does
    this while the model is built). Returns the ``QuantizationState``."""
    config = resolve(config)
    if get_state(model) is not None:
        raise QuantizationError(f"model {model.name!r} is already quantize-aware")
    plan = graph.plan(model, config, exclude=(QuantizationState,))
    if plan.unreached:
        # A kernel the serving forward never calls cannot be calibrated: keep it
        # out rather than train a range that is never set.
        for key in [k for k, (_, p) in plan.layers.items() if p.path in plan.unreached]:
            del plan.layers[key]
    pruned = []
    if config["prune"] is not None:
        pruned = [(p.path, tuple(_kernel(layer).shape)) for layer, p in plan.layers.values()
                  if p.role == "compute"]
    state = QuantizationState(plan.quantizers, config, pruned, name=STATE_ATTR)
    tracker = getattr(model, "_tracker", None)
    if tracker is not None:
        locked = tracker.locked
        tracker.unlock()
    setattr(model, STATE_ATTR, state)
    if tracker is not None and locked:
        tracker.lock()
    vars(model)["_qat_plan"] = plan
    for layer, p in plan.layers.values():
        object.__setattr__(layer, "call", _quantized_call(layer, p, state))
    return state


def get_state(model):
    state = vars(model).get(STATE_ATTR)
    return state if isinstance(state, QuantizationState) else None


def is_quantize_aware(model):
    return get_state(model) is not None


def quantize_aware(model, config=None, calibration_data=None, calibration_batches=16,
                   batch_size=32):
    """A copy of zoo ``model`` whose Dense / EinsumDense / Conv / DepthwiseConv
    layers (inside attention, MLP and patch-embedding blocks too) compute with
    fake-quantized kernels and activations, as the int8 TFLite file will.

    Args:
        model: a keras_zoo model (any family); it is not changed.
        config: None or a dict of options (``keras_zoo.quantization.DEFAULTS``).
        calibration_data: inputs that set each activation range before any
            training (an array of inputs, a tf.data.Dataset of inputs or
            (inputs, labels) batches, or a list of batches). Without it the
            ranges start from the first training batch.
        calibration_batches: batches read from ``calibration_data``.

    The copy is the same family with ``qat`` in its config: it saves and loads
    through ``.keras`` files and presets, trains under any strategy and exports
    with ``export.export --quantization=int8`` without representative data.
    """
    if not hasattr(model, "get_zoo_config"):
        raise QuantizationError(
            f"quantize_aware takes a keras_zoo model (a ZooModel family); got "
            f"{type(model).__name__}, whose config cannot carry the quantizers")
    if is_quantize_aware(model):
        raise QuantizationError(f"model {model.name!r} is already quantize-aware")
    qat = type(model).from_config({**model.get_config(), "qat": resolve(config)})
    for source, target in zip(model.layers, qat.layers):
        target.set_weights(source.get_weights())
    if calibration_data is not None:
        calibrate(qat, calibration_data, calibration_batches, batch_size)
    return qat


def for_training(model, config=None, prune_sparsity=None, calibration_data=None,
                 total_steps=None, calibration_batches=16):
    """What ``experiments.train --qat [--prune_sparsity=S]`` does to the model it
    built: (quantize-aware model, callbacks for ``fit``). A model that is
    already quantize-aware (a QAT preset being fine-tuned further) is kept,
    ranges and all. Pruning follows the polynomial schedule from step 0 to
    three quarters of ``total_steps``, masks updated 50 times on the way."""
    from keras_zoo.quantization import pruning

    config = dict(config or {})
    if prune_sparsity is not None:
        steps = max(2, int(total_steps or 1000))
        config["prune"] = {"sparsity": float(prune_sparsity), "begin_step": 0,
                           "end_step": max(1, int(0.75 * steps)),
                           "frequency": max(1, steps // 50), **(config.get("prune") or {})}
    if is_quantize_aware(model):
        wanted, current = resolve(config), get_state(model).qat_config
        changed = sorted(k for k in config if k != "distill" and wanted[k] != current.get(k))
        if changed:
            raise QuantizationError(
                f"the model is already quantize-aware with other {changed} "
                f"({ {k: current.get(k) for k in changed} }); start from the float preset "
                "to change them")
        teacher = float_copy(model) if config.get("distill", current["distill"]) else None
    else:
        teacher = float_copy(model) if resolve(config)["distill"] else None
        model = quantize_aware(model, config, calibration_data, calibration_batches)
    if teacher is not None:
        distill(model, teacher)
    return model, pruning.callbacks(model)


def float_copy(model):
    """A frozen float copy of ``model`` (its quantizers, if any, left out)."""
    config = {k: v for k, v in model.get_config().items() if k != "qat"}
    copy = type(model).from_config(config)
    for source, target in zip(model.layers, copy.layers):
        target.set_weights(source.get_weights())
    copy.trainable = False
    return copy


def distill(model, teacher, temperature=1.0):
    """Makes ``model``'s loss the cross-entropy between ``teacher``'s softmax and
    its own (knowledge distillation, Hinton et al. 2015; = KL up to a constant)
    for ``fit`` and ``evaluate``; metrics still compare with the labels."""
    loss = model.compile_defaults().get("loss") if hasattr(model, "compile_defaults") else None
    if not (isinstance(loss, keras.losses.SparseCategoricalCrossentropy | 
                       keras.losses.CategoricalCrossentropy)
            and loss.get_config().get("from_logits")):
        raise QuantizationError(
            f"distill needs a classifier trained on logits; {type(model).__name__} trains with "
            f"{type(loss).__name__ if loss is not None else 'its own objective'}")

    def compute_loss(x=None, y=None, y_pred=None, sample_weight=None, training=True):
        target = ops.softmax(ops.stop_gradient(teacher(x, training=False)) / temperature)
        per_example = -ops.sum(
            target * ops.log_softmax(ops.cast(y_pred, "float32") / temperature), axis=-1)
        per_example = per_example * temperature ** 2
        if sample_weight is not None:
            w = ops.cast(ops.reshape(sample_weight, ops.shape(per_example)), "float32")
            total = ops.sum(per_example * w) / ops.maximum(ops.sum(w), 1e-9)
        else:
            total = ops.mean(per_example)
        for extra in model.losses:
            total = total + ops.cast(extra, "float32")
        return total

    object.__setattr__(model, "compute_loss", compute_loss)
    vars(model)["_qat_teacher"] = teacher
    return model


def _kernel(layer):
    return layer.kernel


# ---------------------------------------------------------------- modes

@contextlib.contextmanager
def mode(model, name):
    """Temporarily switches a quantize-aware model: "qat", "export", "float"
    (see QuantizationState). Functions traced inside keep that mode."""
    if name not in MODES:
        raise QuantizationError(f"unknown quantization mode {name!r}; expected {MODES}")
    state = get_state(model)
    if state is None:
        raise QuantizationError(f"model {model.name!r} is not quantize-aware")
    previous = state.mode
    state.mode = name
    try:
        yield state
    finally:
        state.mode = previous


def calibrate(model, data, max_batches=16, batch_size=32):
    """Sets every activation range from float forward passes over ``data``: the
    min and max over all batches, widened to contain zero (what the TFLite
    converter's own calibration does, so a model starts quantization-aware
    training where post-training quantization ends)."""
    state = get_state(model)
    if state is None:
        raise QuantizationError(f"model {model.name!r} is not quantize-aware")
    state.observed = [[] for _ in state.names]
    seen = 0
    with mode(model, "calibrate"):
        for batch in _batches(data, batch_size):
            model(batch, training=False)
            seen += 1
            if seen >= max_batches:
                break
    if not seen:
        raise QuantizationError("calibration data is empty: no batch to set ranges from")
    missing = [n for n, obs in zip(state.names, state.observed) if not obs]
    if missing:
        raise QuantizationError(f"calibration never reached quantizers {missing[:5]}")
    for obs, lo_var, hi_var in zip(state.observed, state.minimums, state.maximums):
        lo = min(0.0, min(o[0] for o in obs))
        hi = max(0.0, max(o[1] for o in obs))
        lo_var.assign(lo)
        hi_var.assign(max(hi, lo + 1e-6))
    state.observed = None
    return state.ranges()


def _batches(data, batch_size):
    """An array is cut into batches; anything else is iterated as batches,
    keeping the inputs of (inputs, labels[, weights]) tuples."""
    if isinstance(data, np.ndarray):
        for i in range(0, len(data), batch_size):
            yield data[i:i + batch_size]
        return
    for batch in data:
        if isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
            batch = batch[0]
        yield batch


# ---------------------------------------------------------------- the wrapped calls

def _training():
    # Keras resolves `training` once per outer call and hands it down through
    # its call context; Dense/Conv calls do not take the argument themselves.
    from keras.src.backend.common import global_state

    context = global_state.get_global_attribute("current_call_ctx")
    training = getattr(context, "training", None) if context is not None else None
    return bool(training) if isinstance(training, (bool, int)) else False


def _quantized_call(layer, p, state):
    original = layer.call  # the class's bound method

    def call(*args, **kwargs):
        training = _training()
        if p.inputs:
            args, kwargs = graph.replace_call_tensors(
                args, kwargs,
                lambda pos, x: state.fake_quantize(p.inputs[pos], x, training)
                if pos in p.inputs else x)
        if p.role == "compute":
            outputs = _compute(layer, p, state, args[0], training)
        elif p.folded_into is not None:
            # Folded into the conv before it, unless training with batch statistics.
            outputs = original(*args, **kwargs) if _batch_stats(state, training) else args[0]
        elif p.constants and state.mode == "qat":
            outputs = _with_quantized_constants(layer, p.constants, original, args, kwargs)
        else:
            outputs = original(*args, **kwargs)
        if p.outputs:
            outputs = graph.replace_outputs(
                outputs, lambda pos, x: state.fake_quantize(
                    p.outputs[pos], x, training, update=pos not in p.tied)
                if pos in p.outputs else x)
        return outputs
    return call


def _with_quantized_constants(layer, names, original, args, kwargs):
    """Runs ``original`` with the layer's weights fake-quantized per tensor on
    their own [min, max], as the converter quantizes constant operands. (Not
    in "export" mode: there the converter does it.)"""
    variables = {name: vars(layer)[name] for name in names}
    try:
        for name, variable in variables.items():
            w = ops.cast(variable, "float32")
            lo = ops.stop_gradient(ops.minimum(ops.min(w), 0.0))
            hi = ops.stop_gradient(ops.maximum(ops.max(w), lo + 1e-6))
            object.__setattr__(layer, name, ops.cast(fake_quant(w, lo, hi), variable.dtype))
        return original(*args, **kwargs)
    finally:
        for name, variable in variables.items():
            object.__setattr__(layer, name, variable)


def _compute(layer, p, state, x, training):
    """The layer's own arithmetic with the effective kernel: pruned, BatchNorm
    folded, fake-quantized (not in "export" mode for per-channel kernels: the
    converter quantizes float weights itself, per output channel, exactly as
    ``quantize_kernel`` simulates; a per-channel FakeQuant on a Dense kernel
    does not convert, see the README)."""
    names = graph.class_names(layer)
    kernel = _kernel(layer)
    mask = state.mask_of(p.path)
    if mask is not None:
        kernel = kernel * ops.cast(mask, kernel.dtype)
    bias = layer.bias if getattr(layer, "bias", None) is not None else None
    depthwise = "DepthwiseConv2D" in names
    if p.fold is not None and not _batch_stats(state, training):
        kernel, bias = _fold_batchnorm(kernel, bias, p.fold, depthwise)
    if state.mode == "qat" or (state.mode == "export" and p.weights == "per_tensor"):
        kernel = quantize_kernel(kernel, p.weights == "per_channel", depthwise)
    if "EinsumDense" in names:
        y = ops.einsum(layer.equation, x, kernel)
    elif "Dense" in names:
        y = ops.matmul(x, kernel)
    elif depthwise:
        y = ops.depthwise_conv(x, kernel, strides=layer.strides, padding=layer.padding,
                               dilation_rate=layer.dilation_rate, data_format=layer.data_format)
    else:
        y = layer.convolution_op(x, kernel)
    if bias is not None:
        y = ops.add(y, ops.cast(bias, y.dtype))
    if p.pre_activation is not None:
        y = state.fake_quantize(p.pre_activation, y, training)
    activation = getattr(layer, "activation", None)
    return activation(y) if activation is not None else y


def _batch_stats(state, training):
    return state.qat_config["batchnorm"] == "batch_stats" and training and state.mode == "qat"


def _fold_batchnorm(kernel, bias, bn, depthwise):
    """w * gamma / sqrt(var + eps) per output channel; bias (b - mean) * that + beta."""
    inv = ops.rsqrt(ops.cast(bn.moving_variance, "float32") + bn.epsilon)
    if bn.scale:
        inv = inv * ops.cast(bn.gamma, "float32")
    mean = ops.cast(bn.moving_mean, "float32")
    b = ops.cast(bias, "float32") if bias is not None else ops.zeros_like(mean)
    new_bias = (b - mean) * inv
    if bn.center:
        new_bias = new_bias + ops.cast(bn.beta, "float32")
    k = ops.cast(kernel, "float32")
    if depthwise:
        inv = ops.reshape(inv, tuple(k.shape[-2:]))
    kernel = ops.cast(k * inv, kernel.dtype)
    return kernel, ops.cast(new_bias, kernel.dtype)


# ---------------------------------------------------------------- inspection

def describe(model):
    """One line per quantized layer: role, quantizer positions, ranges, weights."""
    state = get_state(model)
    if state is None:
        raise QuantizationError(f"model {model.name!r} is not quantize-aware")
    plan = vars(model)["_qat_plan"]
    ranges = list(state.ranges().values())
    lines = []
    for layer, p in plan.layers.values():
        parts = [f"{p.path} ({type(layer).__name__}, {p.role})"]
        if p.role == "compute":
            parts.append(f"weights {p.weights}")
        if p.fold is not None:
            parts.append(f"folds {p.fold.name}")
        for label, positions in (("in", p.inputs), ("out", p.outputs)):
            for pos, q in positions.items():
                lo, hi = ranges[q]
                parts.append(f"{label} {graph.position_name(pos)} [{lo:.3g}, {hi:.3g}]")
        if p.pre_activation is not None:
            lo, hi = ranges[p.pre_activation]
            parts.append(f"pre-activation [{lo:.3g}, {hi:.3g}]")
        lines.append("; ".join(parts))
    return "\n".join(lines)
