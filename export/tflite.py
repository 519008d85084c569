"""SavedModel -> TFLite conversion in four precisions, and what is inside a file.

Measured in this repo (TF 2.21, LiteRT 2.3), and why the code looks as it does:

* ``TFLiteConverter.from_saved_model`` on a SavedModel written by Keras'
  ``ExportArchive`` with a static batch gives outputs equal to Keras (1e-6).
  ``from_concrete_functions`` on the live model kept the variables as
  VAR_HANDLE/READ_VARIABLE ops and produced all-NaN outputs;
  ``from_keras_model`` traced a dynamic batch (SHAPE, REDUCE_PROD, GATHER ops).
* Builtin ops only, unless ``allow_flex``: neither the ai_edge_litert nor the
  tf.lite interpreter runs flex (SELECT_TF_OPS) kernels.
* Full int8: this runtime's XNNPACK delegate has no int8 kernel for GELU,
  SOFTMAX, BATCH_MATMUL (attention) and RSQRT, and rejects an int8 ADD of a
  tiny epsilon constant; each such op ran undelegated and the int8 ViT was
  2x slower than float32. ``INT8_FLOAT_OPS`` / ``INT8_FLOAT_SCOPES`` keep
  those few ops in float (selective quantization through
  ``tf.lite.experimental.QuantizationDebugger``); XNNPACK then runs them in
  float inside the same delegated graph, and the convolutions and dense
  layers, which hold the weights and the time, stay int8.
"""

import os
import re
import warnings

import numpy as np
import tensorflow as tf

QUANTIZATIONS = ("none", "float16", "dynamic_int8", "int8")
# Op types kept in float in "int8" mode (see the module docstring).
INT8_FLOAT_OPS = ("GELU", "SOFTMAX", "BATCH_MATMUL", "RSQRT")
# Name scopes whose ops stay float: the LayerNorm statistics of
# keras_zoo.layers.normalization (INVERSE_STDDEV_SCOPE) and of Keras' own
# LayerNormalization (tf.nn.moments: its SQUARED_DIFFERENCE has no int8
# XNNPACK kernel; measured on the tiny ViT's final norm: int8 91 -> 43 us).
INT8_FLOAT_SCOPES = ("inverse_stddev", "moments")


class ExportError(ValueError):
    """An export that cannot be done as asked; the message says why and what to change."""


def convert(saved_model_dir, quantization="none", representative=None, int8_io=False,
            allow_flex=False, signature_keys=None, float_ops=INT8_FLOAT_OPS,
            float_scopes=INT8_FLOAT_SCOPES, debug_report=None):
    """Converts a SavedModel to TFLite bytes.

    Args:
        quantization: one of ``QUANTIZATIONS``.
        representative: for "int8": ``{signature_key: {input_name: array}}``,
            each array (num_samples, *static input shape incl. batch).
        int8_io: int8 inputs and outputs (integer-only accelerators); else float.
        float_ops, float_scopes: ops (by TFLite op name) and name scopes kept in
            float in "int8" mode; both empty gives integer-only conversion that
            fails when an op has no int8 kernel.
        debug_report: a path; writes the QuantizationDebugger per-layer CSV.
    """
    if quantization not in QUANTIZATIONS:
        raise ExportError(f"unknown quantization {quantization!r}; expected one of "
                          f"{', '.join(QUANTIZATIONS)}")
    if int8_io and quantization != "int8":
        raise ExportError(f"int8_io needs quantization='int8', got {quantization!r}: "
                          "only a fully quantized graph has integer inputs/outputs")
    if quantization == "int8" and not representative:
        raise ExportError("quantization='int8' needs representative data to calibrate "
                          "activation ranges (--representative_data=digits:train or an array)")

    def converter(mode):
        c = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir,
                                                     signature_keys=signature_keys)
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS] + (
            [tf.lite.OpsSet.SELECT_TF_OPS] if allow_flex else [])
        if mode != "none":
            c.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "float16":
            c.target_spec.supported_types = [tf.float16]
        if mode == "int8":
            c.representative_dataset = _representative_fn(representative)
        return c

    if quantization != "int8":
        return _run(converter(quantization).convert)
    float_model = _run(converter("none").convert)
    deny_ops = sorted(set(float_ops) & set(model_ops(float_model)["builtin"]))
    deny_nodes = _tensor_names_in_scopes(float_model, float_scopes)
    if not deny_ops and not deny_nodes and not debug_report:
        c = converter("int8")
        # Integer-only: an op without an int8 kernel is an error, not a silent float island.
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8] + (
            [tf.lite.OpsSet.SELECT_TF_OPS] if allow_flex else [])
        if int8_io:
            c.inference_input_type = c.inference_output_type = tf.int8
        return _run(c.convert)
    if debug_report and len(representative) > 1:
        raise ExportError(
            "--debug_quantization works on one signature at a time; this file has "
            f"{sorted(representative)}: pass --signature")
    options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_ops=deny_ops, denylisted_nodes=deny_nodes, fully_quantize=int8_io)
    debugger = _run(lambda: tf.lite.experimental.QuantizationDebugger(
        converter=converter("int8"), debug_dataset=_representative_fn(representative, True),
        debug_options=options))
    if debug_report:
        debugger.run()
        with open(debug_report, "w") as f:
            debugger.layer_statistics_dump(f)
    return _run(debugger.get_nondebug_quantized_model)


def _representative_fn(representative, as_list=False):
    """Calibration samples as the converter wants them: ``(key, {name: x})``
    per signature, ``{name: x}`` for one signature; the debugger wants a list
    in input order (one signature)."""
    keys = sorted(representative)

    def gen():
        for key in keys:
            inputs = representative[key]
            for i in range(len(next(iter(inputs.values())))):
                sample = {name: a[i] for name, a in inputs.items()}
                if as_list:
                    yield list(sample.values())
                else:
                    yield (key, sample) if len(keys) > 1 else sample
    return gen


def _run(fn):
    """Calls a converter step; turns its MLIR trace into one readable error."""
    try:
        with warnings.catch_warnings():
            # The debugger builds tf.lite.Interpreter internally; its deprecation
            # notice is not the user's to act on (we run files with ai_edge_litert).
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            return fn()
    except Exception as e:  # ConverterError, RuntimeError, ValueError from MLIR
        if isinstance(e, ExportError):
            raise
        text = str(e)
        lines = [ln.strip() for ln in text.splitlines() if "error:" in ln] or text.splitlines()[:3]
        ops = ", ".join(sorted(set(re.findall(r"'tf\.(\w+)' op", text)))) or "see above"
        hint = ""
        if "ERROR_NEEDS_FLEX_OPS" in text:
            hint = (f" TensorFlow ops without a TFLite builtin: {ops}; --allow_flex embeds "
                    "them as flex ops, which the ai_edge_litert interpreter cannot run.")
        elif "ERROR_NEEDS_CUSTOM_OPS" in text:
            hint = (f" TensorFlow ops with neither a TFLite builtin nor a flex kernel: {ops};"
                    " change the model to avoid them.")
        raise ExportError(f"TFLite conversion failed ({type(e).__name__}): "
                          f"{' | '.join(lines[:3])[:800]}.{hint}") from e


def _tensor_names_in_scopes(content, scopes):
    """Tensor names under ``scopes`` in every subgraph (one per signature)."""
    if not scopes:
        return []
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(content, 0)
    names = [model.Subgraphs(g).Tensors(t).Name().decode()
             for g in range(model.SubgraphsLength())
             for t in range(model.Subgraphs(g).TensorsLength())]
    return sorted({n for n in names for s in scopes if f"/{s}/" in n})


def model_ops(content):
    """{"builtin": [...], "flex": [...], "custom": [...]}: op names a .tflite uses."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}
    model = schema.Model.GetRootAs(content, 0)
    used = set()
    for s in range(model.SubgraphsLength()):
        sub = model.Subgraphs(s)
        for o in range(sub.OperatorsLength()):
            used.add(sub.Operators(o).OpcodeIndex())
    out = {"builtin": set(), "flex": set(), "custom": set()}
    for index in used:
        code = model.OperatorCodes(index)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        custom = code.CustomCode()
        if custom:
            custom = custom.decode()
            out["flex" if custom.startswith("Flex") else "custom"].add(custom)
        else:
            out["builtin"].add(names.get(builtin, str(builtin)))
    return {k: sorted(v) for k, v in out.items()}


def delegation(interpreter):
    """Which ops XNNPACK left to the reference kernels, for subgraph 0.

    Returns (number of delegate partitions, sorted op names run outside).
    Walks back from the outputs (and from each delegate partition's inputs)
    through ops not inside a partition: those are the ops the runtime runs.
    """
    ii = interpreter._interpreter  # the public API has no execution-plan view
    names = [ii.NodeName(j) for j in range(ii.NumNodes())]
    delegates = [j for j, n in enumerate(names) if n == "DELEGATE"]
    producer = {t: j for j, n in enumerate(names) if n != "DELEGATE"
                for t in ii.NodeOutputs(j)}
    delegated = {t for j in delegates for t in ii.NodeOutputs(j)}
    stack = [d["index"] for d in interpreter.get_output_details()]
    stack += [t for j in delegates for t in ii.NodeInputs(j)]
    seen, outside = set(), set()
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in delegated or t not in producer or producer[t] in outside:
            continue
        outside.add(producer[t])
        stack.extend(x for x in ii.NodeInputs(producer[t]) if x >= 0)
    return len(delegates), sorted(names[j] for j in outside)


def quantize_input(value, detail):
    """Float array -> the dtype an input tensor wants (int8 inputs use its scale/zero point)."""
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.integer) and detail["quantization"][0]:
        scale, zero = detail["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(value / scale + zero), info.min, info.max).astype(dtype)
    return np.asarray(value).astype(dtype)


def dequantize_output(value, detail):
    scale, zero = detail["quantization"]
    if np.issubdtype(value.dtype, np.integer) and scale:
        return (value.astype("float32") - zero) * scale
    return value


def file_size(path):
    return os.path.getsize(path)
