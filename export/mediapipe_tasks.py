"""What a TFLite file needs so that a MediaPipe Task runs it, from what the family declares.

A family names the MediaPipe Task of each exported signature in its own file
(``ZooModel.MEDIAPIPE_TASKS`` / ``mediapipe_tasks()``); the exporter stays
generic. ``plan`` runs before conversion (it may wrap a grey model so that the
file takes RGB, as MediaPipe's image tasks require depth 3 or 4), ``attach``
after it (the metadata, the labels or vocabulary, a uint8 input's scale).

Image inputs: every keras_zoo vision model takes float images in [0, 1]
(further normalisation lives inside the model graph), so MediaPipe's
``NormalizationOptions`` map uint8 pixels to [0, 1]: mean 0, std 255
(``normalization``: a config ``input_range`` other than [0, 1] changes it).
A full-int8 file with ``int8_io`` takes uint8 pixels (MediaPipe feeds a
quantized model the raw bytes and refuses int8 tensors) with scale 1/std and
zero point mean, the same mapping exactly, and gives float scores.
Classifier scores are the model's logits.
"""

import dataclasses
import sys

from export import metadata
from export.tflite import ExportError

METADATA_MODES = ("auto", "mediapipe", "none")
IMAGE_TASKS = ("image_classifier", "image_embedder")
TEXT_TASKS = ("text_classifier", "text_embedder")
LABELS_FILE, VOCAB_FILE = "labels.txt", "vocab.txt"
# tf.image.rgb_to_grayscale's weights (the data pipeline's), scaled to sum to 1
# so that a grey image given as R = G = B comes back exactly.
GREY_WEIGHTS = tuple(w / 0.9999 for w in (0.2989, 0.5870, 0.1140))


class Skip(Exception):
    """Why a file gets no metadata: a note under ``auto``, an error under ``mediapipe``."""


@dataclasses.dataclass
class Plan:
    task: str
    signature: str
    input_names: list  # the signature's input names
    labels: list | None = None
    normalization: tuple | None = None  # (mean, std) on 0..255 pixels
    image_size: tuple | None = None  # (height, width)
    vocabulary: list | None = None
    text_names: dict | None = None  # signature input name -> MediaPipe metadata name


def normalization(model):
    """(mean, std) with ``(pixel - mean) / std`` = the model's input range:
    config ``input_range`` (default [0, 1], the zoo's image contract)."""
    config = model.get_zoo_config() if hasattr(model, "get_zoo_config") else {}
    low, high = config.get("input_range") or (0.0, 1.0)
    std = 255.0 / (high - low)
    return -low * std, std


def label_names(model, labels_path=None):
    """Category names: the ``--labels`` file (one per line), else the config's
    ``label_names``, else None."""
    if labels_path:
        try:
            with open(labels_path, encoding="utf-8") as f:
                names = [line.rstrip("\r\n") for line in f]
        except OSError as e:
            raise ExportError(f"--labels={labels_path!r} cannot be read: {e.strerror}") from e
        while names and not names[-1]:
            names.pop()
        return names
    config = model.get_zoo_config() if hasattr(model, "get_zoo_config") else {}
    names = config.get("label_names")
    return list(names) if names else None


def _tasks_that_exist():
    from keras_zoo.models.base import families_with_mediapipe_tasks

    known = families_with_mediapipe_tasks()
    order = [t for t in IMAGE_TASKS + TEXT_TASKS if t in known]
    return "; ".join(f"{task}: {', '.join(known[task])}" for task in order)


def plan(model, specs, mode="auto", labels_path=None):
    """(specs, Plan or None). ``mode``: "auto" writes metadata where MediaPipe
    knows the file's task and says in one line why not elsewhere; "mediapipe"
    requires it; "none" skips it."""
    if mode not in METADATA_MODES:
        raise ExportError(f"unknown --metadata={mode!r}; expected one of "
                          f"{', '.join(METADATA_MODES)}")
    if mode == "none":
        return specs, None
    try:
        return _plan(model, specs, labels_path, required=mode == "mediapipe")
    except Skip as e:
        if mode == "mediapipe":
            raise ExportError(str(e)) from None
        if str(e):
            print(f"note: no MediaPipe metadata: {e}", file=sys.stderr)
        return specs, None


def _plan(model, specs, labels_path, required):
    family = type(model).__name__
    tasks = model.mediapipe_tasks() if hasattr(model, "mediapipe_tasks") else {}
    if not tasks:
        raise Skip(f"{family} has no MediaPipe task; the tasks that exist: "
                   f"{_tasks_that_exist()}" if required else "")
    if len(specs) != 1:
        choices = " or ".join(f"--signature={s} ({t})" for s, t in tasks.items())
        raise Skip(f"this file holds {len(specs)} signatures {sorted(specs)}; a MediaPipe "
                   f"Task runs a file of one signature: export {choices}")
    (signature, (fn_model, inputs, outputs)), = specs.items()
    task = tasks.get(signature)
    if task is None:
        raise Skip(f"signature {signature!r} of {family} has no MediaPipe task; "
                   f"its tasks: {', '.join(f'{s} ({t})' for s, t in tasks.items())}")
    names = [n for n, _, _ in inputs]
    if task in IMAGE_TASKS:
        return _image_plan(model, specs, task, signature, labels_path, required)
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None or not hasattr(tokenizer, "vocabulary"):
        raise Skip(f"{task} needs the model's WordPiece tokenizer (its vocabulary goes into "
                   f"the file); {family} has {type(tokenizer).__name__ if tokenizer else 'none'}")
    if not getattr(tokenizer, "lowercase", False):
        raise Skip("MediaPipe's BERT preprocessor lower-cases the text; this model's "
                   "vocabulary is cased (lowercase=False)")
    result = Plan(task, signature, names, vocabulary=list(tokenizer.vocabulary),
                  text_names=dict(model.MEDIAPIPE_INPUT_NAMES))
    if sorted(result.text_names) != sorted(names):
        raise Skip(f"{family}'s MEDIAPIPE_INPUT_NAMES {sorted(result.text_names)} do not "
                   f"match the signature's inputs {names}")
    if task == "text_classifier":
        result.labels = _labels(model, labels_path, outputs, fn_model, required)
    return specs, result


def _image_plan(model, specs, task, signature, labels_path, required):
    from export.export import is_image

    (fn_model, inputs, outputs), = specs.values()
    if len(inputs) != 1 or not is_image(inputs[0][1], inputs[0][2]):
        raise Skip(f"{task} needs one float image input (batch, size, size, 1 or 3); "
                   f"signature {signature!r} takes {[(n, s) for n, s, _ in inputs]}")
    name, shape, dtype = inputs[0]
    result = Plan(task, signature, [name], normalization=normalization(model),
                  image_size=(shape[1], shape[2]))
    if task == "image_classifier":
        result.labels = _labels(model, labels_path, outputs, fn_model, required)
    if shape[3] == 1:  # MediaPipe feeds depth 3 or 4: the file converts to grey itself
        fn_model = rgb_to_grey(fn_model, name)
        specs = {signature: (fn_model, [(name, shape[:3] + (3,), dtype)], outputs)}
    return specs, result


def _labels(model, labels_path, outputs, fn_model, required):
    names = label_names(model, labels_path)
    num_classes = fn_model.outputs[0].shape[-1] if len(fn_model.outputs) == 1 else None
    if names is None:
        message = (f"{type(model).__name__} records no label names; pass --labels=FILE (one "
                   f"category name per line, {num_classes} lines) for named categories")
        if required:
            raise ExportError(message)
        print(f"warning: {message}; MediaPipe will report class indexes only",
              file=sys.stderr)
        return None
    if num_classes is not None and len(names) != num_classes:
        raise ExportError(f"{len(names)} label names for a classifier of {num_classes} "
                          f"classes (--labels={labels_path!r}): give one name per class")
    return names


def rgb_to_grey(fn_model, name):
    """``fn_model`` taking (B, H, W, 3) RGB and converting it to grey first."""
    import keras

    shape = tuple(fn_model.inputs[0].shape[1:3]) + (3,)
    rgb = keras.Input(shape, name=name)
    grey = keras.layers.Lambda(
        lambda x: keras.ops.sum(x * keras.ops.convert_to_tensor(GREY_WEIGHTS, x.dtype),
                                axis=-1, keepdims=True), name="rgb_to_grey")(rgb)
    return keras.Model(rgb, fn_model(grey), name=f"{fn_model.name}_rgb")


def attach(content, plan, quantized_input=False):
    """``content`` (.tflite bytes of the plan's one signature) with its
    metadata and associated files; a uint8 image input gets the scale and
    zero point of the normalisation."""
    ins, outs = metadata.signature_io(content)
    order = sorted(ins, key=ins.get)  # signature input names in subgraph order
    files = {}
    if plan.task in IMAGE_TASKS:
        height, width = plan.image_size
        inputs = [metadata.image_input(order[0], None if quantized_input
                                       else plan.normalization, height, width)]
    else:
        inputs = [{"name": plan.text_names[n]} for n in order]
        files[VOCAB_FILE] = "\n".join(plan.vocabulary).encode() + b"\n"
    out_order = sorted(outs, key=outs.get)
    labelled = plan.task in ("image_classifier", "text_classifier") and plan.labels
    if labelled:
        files[LABELS_FILE] = "\n".join(plan.labels).encode() + b"\n"
    outputs = [metadata.feature_output(n, LABELS_FILE if labelled else None)
               for n in out_order]
    subgraph = {"name": plan.signature, "input_tensor_metadata": inputs,
                "output_tensor_metadata": outputs}
    if plan.task in TEXT_TASKS:
        subgraph["input_process_units"] = [metadata.bert_tokenizer(VOCAB_FILE)]
    model_metadata = metadata.model_metadata({
        "name": plan.signature, "description": f"keras_zoo export for MediaPipe {plan.task}",
        "subgraph_metadata": [subgraph], "min_parser_version": metadata.MIN_PARSER_VERSION})
    edit = None
    if quantized_input and plan.task in IMAGE_TASKS:
        mean, std = plan.normalization
        if mean != round(mean) or not 0 <= mean <= 255:
            raise ExportError(f"a uint8 image input needs an integer zero point in 0..255; "
                              f"the model's normalisation has mean {mean}")
        edit = lambda model: _set_input_quantization(model, 1.0 / std, int(mean))
    return metadata.populate(content, model_metadata, files, edit)


def _set_input_quantization(model, scale, zero_point):
    """The uint8 input's (scale, zero point): the converter's QUANTIZE op
    after it requantizes from these into the calibrated int8 range."""
    sub = model.subgraphs[0]
    tensor = sub.tensors[sub.inputs[0]]
    tensor.quantization.scale = [scale]
    tensor.quantization.zeroPoint = [zero_point]


def describe(plan):
    """The result entry: the task and how many category names it carries."""
    return {"task": plan.task, "signature": plan.signature,
            "labels": len(plan.labels) if plan.labels else 0}
