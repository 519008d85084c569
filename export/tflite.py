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
  layers, which hold the weights and the time, stay int8. SELECT (a padding
  mask's ``where(mask, scores, -1e9)``) stays float too: one int8 scale for
  scores of a few units and -1e9 leaves the scores no resolution (a BERT
  classifier's int8 top-1 agreement with float: 58 % with it int8, 99 % float).
"""

import os
import re
import warnings

import numpy as np
import tensorflow as tf

QUANTIZATIONS = ("none", "float16", "dynamic_int8", "int8")
# Op types kept in float in "int8" mode (see the module docstring).
INT8_FLOAT_OPS = ("GELU", "SOFTMAX", "BATCH_MATMUL", "RSQRT", "SELECT", "SELECT_V2")
# Name scopes whose ops stay float: the LayerNorm statistics of
# keras_zoo.layers.normalization (INVERSE_STDDEV_SCOPE) and of Keras' own
# LayerNormalization (tf.nn.moments: its SQUARED_DIFFERENCE has no int8
# XNNPACK kernel; measured on the tiny ViT's final norm: int8 91 -> 43 us).
INT8_FLOAT_SCOPES = ("inverse_stddev", "moments")


class ExportError(ValueError):
    """An export that cannot be done as asked; the message says why and what to change."""


def convert(saved_model_dir, quantization="none", representative=None, int8_io=False,
            allow_flex=False, signature_keys=None, float_ops=INT8_FLOAT_OPS,
            float_scopes=INT8_FLOAT_SCOPES, debug_report=None, io_type="int8"):
    """Converts a SavedModel to TFLite bytes.

    Args:
        quantization: one of ``QUANTIZATIONS``.
        representative: for "int8": ``{signature_key: {input_name: array}}``,
            each array (num_samples, *static input shape incl. batch).
        int8_io: int8 inputs and outputs (integer-only accelerators); else float.
        io_type: under ``int8_io``, "int8" (int8 inputs and outputs), or
            "uint8": uint8 inputs and float outputs, as MediaPipe Tasks want
            (they feed a quantized model the pixel bytes and refuse int8
            tensors; a float output keeps near-tied logits apart, which a
            uint8 one rounds together).
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
            if int8_io:
                c.inference_input_type = tf.uint8 if io_type == "uint8" else tf.int8
                c.inference_output_type = tf.float32 if io_type == "uint8" else tf.int8
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
        return _run(c.convert)
    if debug_report and len(representative) > 1:
        raise ExportError(
            "--debug_quantization works on one signature at a time; this file has "
            f"{sorted(representative)}: pass --signature")
    # The debugger's fully_quantize gives int8 I/O whatever the converter's
    # inference types; uint8 I/O is made from its float-I/O model instead.
    uint8_io = int8_io and io_type == "uint8"
    options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_ops=deny_ops, denylisted_nodes=deny_nodes,
        fully_quantize=int8_io and not uint8_io)
    debugger = _run(lambda: tf.lite.experimental.QuantizationDebugger(
        converter=converter("int8"), debug_dataset=_representative_fn(representative, True),
        debug_options=options))
    if debug_report:
        debugger.run()
        with open(debug_report, "w") as f:
            debugger.layer_statistics_dump(f)
    content = _run(debugger.get_nondebug_quantized_model)
    if uint8_io:  # the converter's own step for uint8 inference types
        from tensorflow.lite.python.util import modify_model_io_type

        content = _run(lambda: modify_model_io_type(content, tf.uint8, tf.float32))
    return content


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


# ---------------------------------------------------------------- quantize-aware models

def convert_qat(saved_model_dir, int8_io=False, allow_flex=False, signature_keys=None,
                float_ops=INT8_FLOAT_OPS):
    """Integer TFLite from a SavedModel whose activations carry FakeQuant ranges
    (keras_zoo.quantization in "export" mode): no representative data.

    Tensors with a range become int8 and the converter quantizes the float
    kernels of FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D per output channel
    (what the training graph simulated); tensors without one stay float. An op
    in ``float_ops`` that the converter made int8 because both its sides have
    ranges (GELU between two dense layers) is put back in float between a
    DEQUANTIZE and a QUANTIZE (``float_islands``): that is what the training
    graph computed, and XNNPACK has no int8 kernel for it.
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir,
                                                         signature_keys=signature_keys)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS] + (
        [tf.lite.OpsSet.SELECT_TF_OPS] if allow_flex else [])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if int8_io:
        converter.inference_input_type = converter.inference_output_type = tf.int8
    return float_islands(_run(converter.convert), float_ops)


# Reductions the converter runs in int8 with the scale of their input copied to
# their output when the graph gives the output no range of its own. In a
# quantize-aware graph such an output was float (a LayerNorm's mean): rounding
# it to the input's grid is an error training never saw, which the
# normalisation then divides by a small standard deviation (measured on the
# tiny ViT: LayerNorm output off by 14 quantization steps). They run in float.
PROPAGATED_SCALE_OPS = ("MEAN", "SUM")


def float_islands(content, float_ops, propagated=PROPAGATED_SCALE_OPS):
    """Rewrites every int8 op of a type in ``float_ops``, and every op of a type
    in ``propagated`` whose output has exactly its input's scale and zero
    point, as DEQUANTIZE -> float op -> QUANTIZE (same graph otherwise).
    Returns ``content`` unchanged when there is none."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    rewriter = _IslandRewriter(schema.ModelT.InitFromPackedBuf(content, 0), float_ops,
                               propagated)
    if not sum(rewriter.rewrite(sub) for sub in rewriter.model.subgraphs):
        return content
    builder = flatbuffers.Builder(len(content) + 4096)
    builder.Finish(rewriter.model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


class _IslandRewriter:
    def __init__(self, model, float_ops, propagated):
        from ai_edge_litert import schema_py_generated as schema

        self.schema, self.model = schema, model
        self.builtin = {k: v for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}
        self.wanted = {self.builtin[o] for o in float_ops if o in self.builtin}
        self.copied = {self.builtin[o] for o in propagated if o in self.builtin}

    def code_of(self, op):
        c = self.model.operatorCodes[op.opcodeIndex]
        return max(c.builtinCode, c.deprecatedBuiltinCode)

    def opcode(self, name):
        codes = self.model.operatorCodes
        for i, c in enumerate(codes):
            if max(c.builtinCode, c.deprecatedBuiltinCode) == self.builtin[name]:
                return i
        code = self.schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = self.builtin[name]
        code.version = 2  # int8 <-> float conversions
        codes.append(code)
        return len(codes) - 1

    def activation(self, sub, i):
        """An int8 tensor computed at run time (not a constant weight)."""
        t = sub.tensors[i]
        data = self.model.buffers[t.buffer].data if t.buffer else None
        return (t.type == self.schema.TensorType.INT8 and t.quantization is not None
                and (data is None or not len(data)))

    def float_twin(self, sub, i, suffix):
        src, t = sub.tensors[i], self.schema.TensorT()
        t.shape, t.shapeSignature = src.shape, src.shapeSignature
        t.type, t.buffer = self.schema.TensorType.FLOAT32, 0
        t.name = (src.name or b"") + suffix
        sub.tensors.append(t)
        return len(sub.tensors) - 1

    def conversion(self, name, source, target):
        op = self.schema.OperatorT()
        op.opcodeIndex = self.opcode(name)
        op.inputs, op.outputs = [source], [target]
        return op

    @staticmethod
    def same_scale(sub, op):
        a, b = (sub.tensors[op.inputs[0]].quantization, sub.tensors[op.outputs[0]].quantization)
        scales = [list(getattr(q, "scale", None) or []) for q in (a, b)]
        zeros = [list(getattr(q, "zeroPoint", None) or []) for q in (a, b)]
        return bool(scales[0]) and scales[0] == scales[1] and zeros[0] == zeros[1]

    def rewrite(self, sub):
        """Rewrites one subgraph in place; returns how many ops became float."""
        readers = {}
        for op in sub.operators:
            for i in op.inputs:
                readers.setdefault(i, []).append(op)
        dequantize = self.opcode("DEQUANTIZE")
        alias, dropped, new_ops, changed = {}, set(), [], 0
        for op in sub.operators:
            code = self.code_of(op)
            copied_scale = code in self.copied and self.same_scale(sub, op)
            if not any(i >= 0 and self.activation(sub, i) for i in op.inputs) or \
                    not (code in self.wanted or copied_scale):
                new_ops.append(op)
                continue
            changed += 1
            inputs = list(op.inputs)
            for k, i in enumerate(inputs):
                if i >= 0 and self.activation(sub, i):
                    inputs[k] = self.float_twin(sub, i, b"/dequantized")
                    new_ops.append(self.conversion("DEQUANTIZE", i, inputs[k]))
            op.inputs = inputs
            after, outputs = [], list(op.outputs)
            for k, o in enumerate(outputs):
                if not self.activation(sub, o):
                    continue
                outputs[k] = self.float_twin(sub, o, b"/float")
                users = readers.get(o, [])
                if copied_scale:
                    # The int8 output only existed because the converter copied
                    # a scale: readers that dequantize it read the float instead.
                    for user in users:
                        if user.opcodeIndex == dequantize:
                            alias[user.outputs[0]] = outputs[k]
                            dropped.add(id(user))
                    users = [u for u in users if id(u) not in dropped]
                if users or o in sub.outputs or not copied_scale:
                    after.append(self.conversion("QUANTIZE", outputs[k], o))
            op.outputs = outputs
            new_ops.append(op)
            new_ops.extend(after)
        sub.operators = [op for op in new_ops if id(op) not in dropped]
        for op in sub.operators:
            op.inputs = [alias.get(i, i) for i in op.inputs]
        sub.outputs = [alias.get(i, i) for i in sub.outputs]
        return changed


def op_precisions(content):
    """{op name: {"int8": n, "float32": n, ...}}: each op counted under the type
    of its first non-constant input (QUANTIZE and DEQUANTIZE under "convert")."""
    from ai_edge_litert import schema_py_generated as schema

    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper()}
    types = {v: k.lower() for k, v in vars(schema.TensorType).items() if k.isupper()}
    model = schema.ModelT.InitFromPackedBuf(content, 0)
    out = {}
    for sub in model.subgraphs:
        for op in sub.operators:
            c = model.operatorCodes[op.opcodeIndex]
            name = builtin.get(max(c.builtinCode, c.deprecatedBuiltinCode), "CUSTOM")
            kind = "convert"
            if name not in ("QUANTIZE", "DEQUANTIZE"):
                kind = "const"
                for i in op.inputs:
                    t = sub.tensors[i] if i >= 0 else None
                    if t is None or (t.buffer and model.buffers[t.buffer].data is not None
                                     and len(model.buffers[t.buffer].data)):
                        continue
                    if t.type == schema.TensorType.INT32 and name in (
                            "SPLIT", "RESHAPE", "TRANSPOSE", "MEAN"):
                        continue  # an axis or shape operand
                    kind = types[t.type]
                    break
            counts = out.setdefault(name, {})
            counts[kind] = counts.get(kind, 0) + 1
    return {k: out[k] for k in sorted(out)}


def weight_sparsity(content):
    """{"zero_fraction", "kernel_weights"}: zeros among the weights (filter
    operand) of FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D ops, int8 or
    float, e.g. after magnitude pruning."""
    from ai_edge_litert import schema_py_generated as schema

    kernel_ops = {schema.BuiltinOperator.FULLY_CONNECTED, schema.BuiltinOperator.CONV_2D,
                  schema.BuiltinOperator.DEPTHWISE_CONV_2D}
    dtypes = {schema.TensorType.INT8: np.int8, schema.TensorType.FLOAT32: np.float32}
    model = schema.ModelT.InitFromPackedBuf(content, 0)
    zeros = total = 0
    for sub in model.subgraphs:
        for op in sub.operators:
            c = model.operatorCodes[op.opcodeIndex]
            if max(c.builtinCode, c.deprecatedBuiltinCode) not in kernel_ops or len(op.inputs) < 2:
                continue
            t = sub.tensors[op.inputs[1]]
            data = model.buffers[t.buffer].data if t.buffer else None
            if data is None or t.type not in dtypes:
                continue
            values = np.frombuffer(np.asarray(data, np.uint8).tobytes(), dtypes[t.type])
            zeros += int(values.size - np.count_nonzero(values))
            total += values.size
    return {"zero_fraction": zeros / total if total else 0.0, "kernel_weights": total}
