"""Which tensors of a model get a fake-quant, found by watching one forward pass.

Zoo models are functional graphs of layers that call sub-layers in their
own ``call`` (a transformer block calls its norms, its attention and its
MLP; the attention calls its qkv and out projections). ``trace`` records
every layer call at every depth, with the identity of each float tensor
that goes in and comes out; ``plan`` walks those events once and decides,
per layer and per input/output position, where a quantizer sits:

* each tensor an int8 graph will hold gets exactly one quantizer, at the
  first place it is seen: the output of the layer that produced it, or,
  for tensors made by a layer's own code (a residual sum, the model
  input), the entry of the first layer that reads it;
* Dense / EinsumDense / Conv / DepthwiseConv layers ("compute") quantize
  their kernel too, and a BatchNormalization that only reads a
  convolution's output is folded into it (no quantizer between them);
* a ReLU layer reading a compute output fuses with it (one quantizer, after
  the ReLU, as the converter fuses the activation);
* shape-only layers (reshape, pooling by max, padding, dropout) pass the
  scale through, as TFLite's same-scale ops do;
* float layers (LayerNorm, softmax; ``float_layers``) read float values,
  so their inputs get no quantizer, but their outputs are quantized.

The plan depends only on the architecture (which code calls which layer
on which tensor), never on weight values, so a model rebuilt from its
config gets the same quantizers in the same order, and its saved ranges load.
"""

import dataclasses

import keras
import numpy as np

from keras_zoo.quantization.config import QuantizationError

COMPUTE = ("Dense", "EinsumDense", "Conv1D", "Conv2D", "DepthwiseConv2D")
SAME_SCALE = ("Reshape", "Flatten", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
              "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
              "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D",
              "Cropping3D", "Permute", "RepeatVector", "Dropout", "SpatialDropout1D",
              "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout", "GaussianNoise",
              "AlphaDropout", "Identity", "ActivityRegularization", "InputLayer")
# Weights that a layer multiplies its input by: a leaf layer holding one and
# not in COMPUTE would run float matmuls the QAT graph does not simulate.
KERNEL_NAMES = ("kernel", "recurrent_kernel", "depthwise_kernel", "pointwise_kernel")


@dataclasses.dataclass
class LayerPlan:
    path: str
    role: str  # compute | batchnorm | float | same_scale | generic | composite
    inputs: dict = dataclasses.field(default_factory=dict)  # flat position -> quantizer
    outputs: dict = dataclasses.field(default_factory=dict)
    pre_activation: int | None = None  # quantizer before a non-fused activation
    fold: object = None  # compute: the BatchNormalization folded into it
    folded_into: object = None  # batchnorm: the conv it is folded into
    weights: str | None = None  # compute: "per_channel" | "per_tensor"
    tied: set = dataclasses.field(default_factory=set)  # outputs sharing an input's range
    constants: list = dataclasses.field(default_factory=list)  # generic: weight attributes
    calls: int = 0


@dataclasses.dataclass
class Plan:
    layers: dict  # id(layer) -> (layer, LayerPlan)
    quantizers: list  # names, in creation order
    unreached: list  # paths of compute layers the forward pass never called


def walk(model, skip=()):
    """(layer, path) for every sub-layer, depth first, each layer once."""
    seen, out = set(), []

    def visit(layer, prefix):
        for child in layer._flatten_layers(include_self=False, recursive=False):
            if id(child) in seen or any(isinstance(child, s) for s in skip):
                continue
            seen.add(id(child))
            path = f"{prefix}/{child.name}" if prefix else child.name
            out.append((child, path))
            visit(child, path)
    visit(model, "")
    return out


def class_names(layer):
    return {c.__name__ for c in type(layer).__mro__}


def is_float_tensor(x):
    if x is None or not hasattr(x, "dtype") or not hasattr(x, "shape"):
        return False
    try:
        return "float" in keras.backend.standardize_dtype(x.dtype)
    except (TypeError, ValueError):
        return False


def call_tensors(args, kwargs):
    """[(position, tensor)] for the float tensors a call receives. Positions name
    the argument ("a", index, leaf) or ("k", keyword, leaf), so that keyword
    arguments present in one call and absent in another do not shift them."""
    out = []
    for i, arg in enumerate(args):
        out += [(("a", i, j), x) for j, x in enumerate(keras.tree.flatten(arg))
                if is_float_tensor(x)]
    for key in sorted(kwargs):
        out += [(("k", key, j), x) for j, x in enumerate(keras.tree.flatten(kwargs[key]))
                if is_float_tensor(x)]
    return out


def output_tensors(outputs):
    return [(("o", j), x) for j, x in enumerate(keras.tree.flatten(outputs))
            if is_float_tensor(x)]


def replace_call_tensors(args, kwargs, fn):
    """(args, kwargs) with ``fn(position, tensor)`` applied to every float tensor."""
    def leaves(prefix, value):
        flat = keras.tree.flatten(value)
        new = [fn(prefix + (j,), x) if is_float_tensor(x) else x for j, x in enumerate(flat)]
        return keras.tree.pack_sequence_as(value, new) if keras.tree.is_nested(value) else new[0]
    args = tuple(leaves(("a", i), a) for i, a in enumerate(args))
    kwargs = {k: leaves(("k", k), v) for k, v in kwargs.items()}
    return args, kwargs


def replace_outputs(outputs, fn):
    flat = keras.tree.flatten(outputs)
    new = [fn(("o", j), x) if is_float_tensor(x) else x for j, x in enumerate(flat)]
    return keras.tree.pack_sequence_as(outputs, new) if keras.tree.is_nested(outputs) else new[0]


def position_name(position):
    kind = position[0]
    if kind == "o":
        return f"out{position[1]}"
    if kind == "a":
        return f"in{position[1]}" + (f".{position[2]}" if position[2] else "")
    return f"{position[1]}" + (f".{position[2]}" if position[2] else "")


def sample_inputs(model, batch=2, seed=0):
    """Random inputs of the model's input shapes (values do not matter to the plan,
    except that they are not all zero, so that a hidden ReLU shows)."""
    rng = np.random.default_rng(seed)
    arrays = []
    for tensor in model.inputs:
        shape = (batch,) + tuple(d or 1 for d in tensor.shape[1:])
        dtype = keras.backend.standardize_dtype(tensor.dtype)
        if "int" in dtype:
            arrays.append(rng.integers(0, 2, shape).astype(dtype))
        elif "bool" in dtype:
            arrays.append(np.ones(shape, bool))
        else:
            arrays.append(rng.standard_normal(shape).astype(dtype))
    return arrays[0] if len(arrays) == 1 else arrays


def trace(model, layers):
    """Runs ``model`` once eagerly with every layer's ``call`` recorded.

    Returns events ``(kind, layer, [(position, tensor)])`` with kind "in"
    (what the layer's call received) or "out" (what it returned), in call order.
    """
    events = []

    def recorder(layer, original):
        def call(*args, **kwargs):
            events.append(("in", layer, call_tensors(args, kwargs)))
            out = original(*args, **kwargs)
            events.append(("out", layer, output_tensors(out)))
            return out
        return call

    installed, saved = [], _perturb(model)
    try:
        for layer, _ in layers:
            had = "call" in vars(layer)
            previous = vars(layer).get("call")
            object.__setattr__(layer, "call", recorder(layer, layer.call))
            installed.append((layer, had, previous))
        model(sample_inputs(model), training=False)
    finally:
        for layer, had, previous in installed:
            if had:
                object.__setattr__(layer, "call", previous)
            else:
                object.__delattr__(layer, "call")
        for variable, value in saved:
            variable.assign(value)
    return events


def _perturb(model, seed=1):
    """Adds noise to every float weight for the trace (restored afterwards), so
    that initial values (zeros, ones) cannot make a layer look like a copy of
    its input; variances stay positive. Returns the saved values."""
    rng = np.random.default_rng(seed)
    saved = []
    for variable in model.weights:
        if "float" not in keras.backend.standardize_dtype(variable.dtype):
            continue
        value = keras.ops.convert_to_numpy(variable)
        noisy = value + rng.normal(0.0, 0.1, value.shape).astype(value.dtype)
        if "variance" in variable.path:
            noisy = np.abs(noisy) + 0.5
        saved.append((variable, value))
        variable.assign(noisy)
    return saved


def _contains(outer, inner):
    """Every value of ``inner`` occurs in ``outer`` (a reshape, transpose or
    concatenation of it): the converter gives such an op one scale for all."""
    outer, inner = np.asarray(outer).ravel(), np.asarray(inner).ravel()
    return outer.size >= inner.size > 0 and bool(np.isin(inner, outer).all())


def role_of(layer, config, path):
    names = class_names(layer)
    skip = set(config["skip_layers"])
    if path in skip or layer.name in skip:
        return "float"
    quantization_mode = getattr(getattr(layer, "dtype_policy", None), "quantization_mode", None)
    if quantization_mode:
        raise QuantizationError(
            f"layer {path!r} ({type(layer).__name__}) is already quantized by Keras "
            f"(quantization_mode={quantization_mode!r}); quantize_aware needs the float model")
    if names & set(COMPUTE):
        if "SeparableConv2D" in names or "Conv2DTranspose" in names or \
                "Conv1DTranspose" in names:
            _unsupported(layer, path)
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise QuantizationError(
                f"layer {path!r} ({type(layer).__name__}) is channels_first; TFLite "
                "convolutions are channels_last, so quantize_aware supports channels_last only")
        if getattr(layer, "lora_enabled", False):
            raise QuantizationError(f"layer {path!r} ({type(layer).__name__}) has LoRA "
                                    "enabled; merge it into the kernel before quantize_aware")
        return "compute"
    if names & set(config["float_layers"]):
        return "float"
    if "BatchNormalization" in names:
        return "batchnorm"
    if names & set(SAME_SCALE):
        return "same_scale"
    own = [v for v in layer._trainable_variables + layer._non_trainable_variables]
    if any(v.path.split("/")[-1] in KERNEL_NAMES for v in own):
        _unsupported(layer, path)
    sublayers = list(layer._flatten_layers(include_self=False, recursive=False))
    return "composite" if sublayers else "generic"


def _unsupported(layer, path):
    raise QuantizationError(
        f"cannot quantize layer {path!r} ({type(layer).__name__}): quantize_aware simulates "
        f"int8 kernels for {', '.join(COMPUTE)} (and the layers built from them); leave it "
        f"out of training's simulation with config={{'skip_layers': [{path!r}]}}")


def _relu_like(layer):
    names = class_names(layer)
    if "ReLU" in names:
        return (not getattr(layer, "negative_slope", 0) and not getattr(layer, "threshold", 0)
                and getattr(layer, "max_value", None) in (None, 6.0, 6))
    if "Activation" in names:
        return getattr(layer.activation, "__name__", "") in ("relu", "relu6")
    return False


def fused_activation(layer):
    """True when TFLite fuses the layer's activation into its kernel (one output scale)."""
    name = getattr(getattr(layer, "activation", None), "__name__", "linear")
    return name in ("linear", "relu", "relu6")


def plan(model, config, exclude=()):
    layers = walk(model, exclude)
    plans = {id(layer): LayerPlan(path, role_of(layer, config, path)) for layer, path in layers}
    events = trace(model, layers)  # holds every traced tensor alive: ids stay unique
    producer, readers = {}, {}
    for kind, layer, tensors in events:
        for _, t in tensors:
            if kind == "out":
                producer.setdefault(id(t), layer)
            else:
                readers.setdefault(id(t), []).append(layer)

    deferred = set()  # tensors whose quantizer moves to (or is replaced by) their reader
    # A BatchNormalization on the last axis whose input is the output of a
    # linear Conv/Dense that nothing else reads is folded into that layer.
    for kind, layer, tensors in events:
        p = plans[id(layer)]
        if kind != "in" or p.role != "batchnorm" or p.folded_into is not None or not tensors:
            continue
        t = tensors[0][1]
        source = producer.get(id(t))
        if (source is not None and plans[id(source)].role == "compute"
                and plans[id(source)].fold is None
                and getattr(source.activation, "__name__", "") == "linear"
                and "EinsumDense" not in class_names(source)
                and readers.get(id(t)) == [layer]
                and _last_axis(layer.axis, len(t.shape))):
            plans[id(source)].fold = layer
            p.folded_into = source
            deferred.add(id(t))
    # A ReLU layer that is the only reader of a compute (or folded) output
    # fuses with it: one quantizer, after the ReLU.
    for kind, layer, tensors in events:
        p = plans[id(layer)]
        fusable = (p.role == "compute" and p.fold is None and fused_activation(layer)) or \
            p.folded_into is not None
        if kind == "out" and fusable and tensors:
            t = tensors[0][1]
            if len(readers.get(id(t), [])) == 1 and _relu_like(readers[id(t)][0]):
                deferred.add(id(t))

    names = []

    def new_quantizer(p, position):
        names.append(f"{p.path}:{position_name(position) if position else 'pre_activation'}")
        return len(names) - 1

    quantized = set()  # tensors that carry a quantizer for every reader
    owner = {}  # tensor id -> (quantizer index, traced value)
    stack = []  # per open call: (ids quantized on the way in, ids received)

    quantized_since = []  # output ids of the calls made inside each open call

    def is_quantized(i):
        return i in quantized or any(i in local for local, _, _ in stack)

    for kind, layer, tensors in events:
        p = plans[id(layer)]
        if kind == "in":
            p.calls += 1
            local = set()
            if p.role in ("compute", "generic", "composite", "batchnorm") and \
                    p.folded_into is None:
                for pos, t in tensors:
                    if id(t) in deferred or is_quantized(id(t)):
                        continue
                    if pos not in p.inputs:
                        p.inputs[pos] = new_quantizer(p, pos)
                    owner[id(t)] = (p.inputs[pos], t)
                    local.add(id(t))
            stack.append((local, [id(t) for _, t in tensors], len(quantized_since)))
            if p.role == "compute" and not fused_activation(layer) and p.pre_activation is None:
                p.pre_activation = new_quantizer(p, None)
            continue
        local, received, start = stack.pop()
        inside = quantized_since[start:]  # quantized during this call (its sub-layers)
        del quantized_since[start:]
        if p.role == "same_scale":
            if received and all(is_quantized(i) for i in received):
                quantized.update(id(t) for _, t in tensors)
                for _, t in tensors:
                    sources = [owner[i] for i in received if i in owner]
                    if sources:
                        owner[id(t)] = sources[0]
            continue
        candidates = [owner[i] for i in received if i in owner] + \
            [owner[i] for i in inside if i in owner]
        for pos, t in tensors:
            if id(t) in local:  # hands back what it quantized on the way in
                quantized.add(id(t))
            elif is_quantized(id(t)) or id(t) in deferred or p.fold is not None:
                continue  # a folded conv's BatchNorm carries the quantizer
            else:
                tie = next((q for q, value in candidates if _contains(t, value)), None)
                if pos not in p.outputs:
                    if tie is not None:
                        # A copy (reshape) or concatenation of a quantized
                        # tensor shares its range: TFLite gives those ops one
                        # scale (and rejects a concatenation without one).
                        p.outputs[pos] = tie
                        p.tied.add(pos)
                    else:
                        p.outputs[pos] = new_quantizer(p, pos)
                owner[id(t)] = (p.outputs[pos], t)
                quantized.add(id(t))
        quantized_since.extend(id(t) for _, t in tensors)
    del events, producer, readers
    for layer, _ in layers:
        p = plans[id(layer)]
        if p.role == "compute":
            p.weights = ("per_tensor" if config["weights"] == "per_tensor"
                         or "EinsumDense" in class_names(layer) else "per_channel")
        if p.role == "batchnorm" and p.folded_into is None:
            p.role = "generic"
        elif p.role == "generic":
            # Weights a layer adds, multiplies or concatenates (a position
            # embedding, a class token) are constants of an int8 op in the
            # file, which the converter rounds to int8 on their own range.
            own = {id(v) for v in layer._trainable_variables + layer._non_trainable_variables
                   if "float" in keras.backend.standardize_dtype(v.dtype)}
            p.constants = sorted(name for name, value in vars(layer).items()
                                 if id(value) in own)
    unreached = [p.path for p in plans.values() if p.role == "compute" and not p.calls]
    active = {}
    for layer, _ in layers:
        p = plans[id(layer)]
        if p.inputs or p.outputs or p.pre_activation is not None or p.folded_into is not None \
                or (p.role == "compute" and p.calls) or p.constants:
            active[id(layer)] = (layer, p)
    return Plan(active, names, unreached)


def _last_axis(axis, rank):
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            return False
        axis = axis[0]
    return axis in (-1, rank - 1)
