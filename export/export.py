"""Exports a zoo model to a SavedModel or a TFLite file, then verifies and benchmarks it.

    python -m export.export --preset=vit_tiny_digits --format=tflite \\
        --quantization=int8 --representative_data=digits:train --output=vit.tflite \\
        --verify --benchmark
    python -m export.export --model_dir=runs/vit --format=saved_model --output=vit_sm
    python -m export.export --preset=hf:gpt2 --format=litertlm --output=gpt2.litertlm

``--format=litertlm`` writes a language model as a LiteRT-LM bundle (the
model, its tokenizer and LlmMetadata in one file; export/litertlm.py).

The exporter is generic: it writes each function a family returns from
``ZooModel.export_signatures()`` (its ``serving_signatures()``, plus
``embedding`` when the family has an embedding hook) under its name, with
named inputs (the Keras ``Input`` names) and named outputs (the output layer
names). ``--signature=NAME`` writes one of them alone.
SavedModels keep a dynamic batch unless ``--batch_size`` is given; TFLite
files always have a static batch (1 by default). Files are written under a
temporary name and renamed, so a failed export leaves nothing behind, and the
temporary folder of a killed one is removed by the next export to that output.
``--output`` of a TFLite file must not be a folder (not even an empty one);
a SavedModel replaces an earlier SavedModel or an empty folder.

``--format=saved_model --quantization=int8`` applies Keras 3's own
``Model.quantize("int8")`` (int8 weights for Keras / TF Serving inference).
Such a model does not convert to TFLite with TF 2.21: the converter rejects
the int8 matmul Keras emits ('tfl.fully_connected' op operand #0 must be
... but got 'tensor<?x17x64xi8>'), so TFLite int8 is done by the converter.
"""

import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time

import numpy as np

from export import mediapipe_tasks, qat, tflite, verify
from export.tflite import QUANTIZATIONS, ExportError

FORMATS = ("saved_model", "tflite", "litertlm")
DEFAULT_VERIFY_DATA = "digits:test"


# ---------------------------------------------------------------- loading

def load_model(preset=None, model_dir=None, **overrides):
    """A zoo model from a registry name / preset folder, or a training run dir
    (``<run>/best`` if present, else ``<run>/last``, else the folder itself)."""
    import keras_zoo
    from keras_zoo import presets

    if bool(preset) == bool(model_dir):
        raise ExportError("give exactly one of --preset (a registry name or preset folder) "
                          "or --model_dir (a training run)")
    if model_dir:
        candidates = [os.path.join(model_dir, "best"), os.path.join(model_dir, "last"),
                      model_dir]
        found = [c for c in candidates if presets._exists(os.path.join(c, presets.CONFIG_FILE))]
        if not found:
            raise ExportError(
                f"--model_dir={model_dir!r} holds no trained model: expected "
                f"{presets.CONFIG_FILE} in {candidates[0]!r}, {candidates[1]!r} or the "
                "folder itself (experiments.train writes best/ and last/)")
        preset = found[0]
    return keras_zoo.from_preset(preset, **overrides)


# ---------------------------------------------------------------- signatures

def signature_specs(model, batch_size=None, signature=None):
    """{signature: (keras function model, [(input name, shape, dtype)], [output names])}."""
    signatures = model.export_signatures() if hasattr(model, "export_signatures") \
        else {"serving_default": model}
    if signature is not None:
        if signature not in signatures:
            raise ExportError(f"unknown signature {signature!r}; {type(model).__name__} "
                              f"exports {sorted(signatures)}")
        signatures = {signature: signatures[signature]}
    if batch_size is not None and batch_size < 1:
        raise ExportError(f"batch_size must be a positive integer, got {batch_size}")
    out = {}
    for key, fn_model in signatures.items():
        inputs = []
        for i, tensor in enumerate(fn_model.inputs):
            name = _clean_name(getattr(tensor, "name", None), f"input_{i}")
            shape = (batch_size,) + tuple(tensor.shape[1:])
            inputs.append((name, shape, str(tensor.dtype)))
        names = list(getattr(fn_model, "output_names", None) or [])
        struct = getattr(fn_model, "_outputs_struct", None)
        if isinstance(struct, dict):  # dict outputs flatten in sorted-key order
            names = sorted(struct)
        if len(names) != len(fn_model.outputs) or len(set(names)) != len(names):
            names = [f"output_{i}" for i in range(len(fn_model.outputs))]
        out[key] = (fn_model, inputs, [_clean_name(n, f"output_{i}")
                                      for i, n in enumerate(names)])
    return out


def _clean_name(name, default):
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in str(name or ""))
    return name or default


def _serving_fn(fn_model, input_names, output_names):
    def serve(*args):
        outputs = fn_model(list(args) if len(args) > 1 else args[0], training=False)
        if isinstance(outputs, dict):  # named outputs (a decoder step's logits + cache)
            return {_clean_name(k, k): v for k, v in outputs.items()}
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        return dict(zip(output_names, outputs))
    return serve


def keras_functions(specs):
    """Keras-side callables with the exported files' calling convention."""
    fns = {}
    for key, (fn_model, inputs, outputs) in specs.items():
        serve = _serving_fn(fn_model, [n for n, _, _ in inputs], outputs)
        fns[key] = lambda serve=serve, names=[n for n, _, _ in inputs], **kw: \
            serve(*[kw[n] for n in names])
    return fns


def write_saved_model(path, specs):
    """Keras ExportArchive: one endpoint per signature, named inputs/outputs."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    tracked = []  # only what the signatures use (not, e.g., DINO's teacher)
    for fn_model, _, _ in specs.values():
        if not any(fn_model is t for t in tracked):
            archive.track(fn_model)
            tracked.append(fn_model)
    for key, (fn_model, inputs, outputs) in specs.items():
        archive.add_endpoint(
            key, _serving_fn(fn_model, [n for n, _, _ in inputs], outputs),
            input_signature=[tf.TensorSpec(shape, dtype, name=name)
                             for name, shape, dtype in inputs])
    archive.write_out(path, verbose=False)


# ---------------------------------------------------------------- data

def is_image(shape, dtype):
    return (len(shape) == 4 and shape[1] == shape[2] and shape[1] is not None
            and shape[3] in (1, 3) and dtype.startswith("float"))


def sample_inputs(inputs, data, n, split, seed=0, model=None, signature="serving_default"):
    """({input name: array (n, ...)}, labels or None) for one signature.

    ``data``: a dataset spec (what the model's ``representative_inputs`` makes
    of it, e.g. tokenized text; else images for an image input;
    ``synthetic[:N]`` gives random values of any shape) or an array
    (single-input signatures).
    """
    from keras_zoo.data import datasets

    if isinstance(data, str) and hasattr(model, "representative_inputs"):
        family = model.representative_inputs(data, split, n, signature)
        if family is not None:
            arrays, labels = family
            names = [name for name, _, _ in inputs]
            if sorted(arrays) != sorted(names):
                raise ExportError(f"{type(model).__name__}.representative_inputs gave "
                                  f"{sorted(arrays)}; the signature takes {names}")
            return {name: np.asarray(arrays[name]).astype(dtype)
                    for name, _, dtype in inputs}, labels

    if not isinstance(data, str):
        array = np.asarray(data)
        if len(inputs) != 1:
            raise ExportError(f"an array works for single-input signatures; this one takes "
                              f"{[name for name, _, _ in inputs]}")
        name, shape, dtype = inputs[0]
        if tuple(array.shape[1:]) != tuple(shape[1:]):
            raise ExportError(
                f"data of shape {tuple(array.shape)} does not fit input {name!r}: expected "
                f"(num_samples, {', '.join(map(str, shape[1:]))})")
        return {name: array[:n].astype(dtype)}, None
    rng = np.random.default_rng(seed)
    arrays, labels = {}, None
    for name, shape, dtype in inputs:
        if is_image(shape, dtype):
            x, y, _ = datasets.load_arrays(data, split, shape[1], shape[3])
            arrays[name], labels = x[:n], y[:n]
        elif data.startswith("synthetic"):
            size = (n,) + tuple(shape[1:])
            arrays[name] = (rng.integers(0, 2, size) if "int" in dtype
                            else rng.standard_normal(size)).astype(dtype)
        else:
            from keras_zoo.data import is_text_spec

            what = "a text set (token ids are not calibrated from it here)" \
                if is_text_spec(data) else "an image set"
            raise ExportError(
                f"dataset {data!r} is {what}, but input {name!r} has shape "
                f"{tuple(shape)} ({dtype}); use --representative_data=synthetic or an array")
    return arrays, labels


def _static_rows(arrays, batch):
    """(n, ...) -> (n // batch, batch, ...): one calibration sample per static batch."""
    out = {}
    for name, a in arrays.items():
        usable = len(a) - len(a) % batch
        if usable == 0:
            raise ExportError(f"need at least {batch} calibration samples, got {len(a)}")
        out[name] = a[:usable].reshape((usable // batch, batch) + a.shape[1:])
    return out


# ---------------------------------------------------------------- export

def _check_writable(path, format):
    """What ``output`` may replace: a TFLite export is one file, never a folder
    (not even an empty one: ``--output=dir/`` is a slip, the file goes inside);
    a SavedModel is a folder and replaces an earlier SavedModel or an empty
    folder, never a file or a folder of other things."""
    parent = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(parent):
        raise ExportError(f"cannot write {path!r}: folder {parent!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise ExportError(f"cannot write {path!r}: folder {parent!r} is not writable")
    if format == "tflite" and os.path.isdir(path):
        raise ExportError(f"--output={path!r} is a folder; a TFLite export is one file: name "
                          f"it, e.g. --output={os.path.join(path, 'model.tflite')}")
    if format == "saved_model" and os.path.exists(path) and not os.path.isdir(path):
        raise ExportError(f"--output={path!r} is a file; a SavedModel is a folder: name a "
                          "new or empty folder (or an earlier SavedModel to replace)")
    if (os.path.isdir(path) and os.listdir(path)
            and not os.path.exists(os.path.join(path, "saved_model.pb"))):
        raise ExportError(f"{path!r} is a non-empty folder that is not a SavedModel; "
                          "refusing to replace it")


def _replace(tmp, path):
    """Renames ``tmp`` onto ``path`` (file or SavedModel folder)."""
    if os.path.isdir(path):
        old = _work_dir(path, "old")
        os.replace(path, os.path.join(old, "x"))
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def export_model(model, output, format="tflite", quantization="none", signature=None,
                 batch_size=None, representative_data=None, calibration_samples=200,
                 int8_io=False, allow_flex=False, float_ops=tflite.INT8_FLOAT_OPS,
                 float_scopes=tflite.INT8_FLOAT_SCOPES, debug_quantization=None,
                 prefill_length=None, context_length=None, metadata="auto", labels=None):
    """Writes ``model`` to ``output``; returns a dict describing the file.

    Args:
        format: "saved_model" (a folder), "tflite" (a file) or "litertlm"
            (a LiteRT-LM bundle; ``prefill_length`` / ``context_length``
            default to the model's ``prefill_length`` / ``max_positions``).
        quantization: "none" | "float16" | "dynamic_int8" | "int8" for TFLite;
            "none" | "int8" (Keras ``Model.quantize``) for SavedModels.
        signature: export only this signature (default: all of them).
        batch_size: static batch; TFLite defaults to 1, SavedModels to dynamic.
        representative_data: dataset spec or array, calibrates "int8".
        float_ops, float_scopes: kept in float in TFLite "int8" (see export.tflite).
        debug_quantization: a path for the QuantizationDebugger per-layer CSV.
        metadata, labels: TFLite Metadata for MediaPipe Tasks (see ``export_tflite``).
    """
    from keras_zoo.backend import require_tensorflow_backend

    require_tensorflow_backend("export.export_model (SavedModel / TFLite)")
    if format not in FORMATS:
        raise ExportError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    if format == "litertlm":
        from export import litertlm

        if signature or batch_size not in (None, 1) or int8_io or debug_quantization:
            raise ExportError("--format=litertlm writes LiteRT-LM's own prefill/decode pair at "
                              "batch 1: --signature, --batch_size, --int8_io and "
                              "--debug_quantization do not apply")
        return litertlm.export_litertlm(model, output, quantization, prefill_length,
                                        context_length)
    if prefill_length is not None or context_length is not None:
        raise ExportError("--prefill_length and --context_length apply to --format=litertlm")
    if format == "tflite":
        return export_tflite(
            model, {quantization: output}, signature, batch_size, representative_data,
            calibration_samples, int8_io, allow_flex, float_ops, float_scopes,
            debug_quantization, metadata, labels)[quantization]
    if quantization not in ("none", "int8"):
        raise ExportError(
            f"quantization={quantization!r} is a TFLite mode; a SavedModel takes 'none' or "
            "'int8' (Keras Model.quantize). Use --format=tflite for float16/dynamic_int8")
    if int8_io or debug_quantization or metadata == "mediapipe":
        raise ExportError("--int8_io, --debug_quantization and --metadata=mediapipe apply to "
                          "--format=tflite only")
    _check_writable(output, "saved_model")
    reap_stale_work_dirs(output)
    if quantization == "int8":
        qat.check_saved_model_int8(model)
        model = keras_int8(model)
    specs = signature_specs(model, batch_size, signature)
    work = _work_dir(output)
    try:
        tmp = os.path.join(work, "saved_model")
        write_saved_model(tmp, specs)
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is not None:  # a text family's vocabulary travels with its graph
            tokenizer.save(os.path.join(tmp, "assets", "tokenizer"))
        _replace(tmp, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _describe(output, "saved_model", quantization, specs, batch_size)


def export_tflite(model, outputs, signature=None, batch_size=1, representative_data=None,
                  calibration_samples=200, int8_io=False, allow_flex=False,
                  float_ops=tflite.INT8_FLOAT_OPS, float_scopes=tflite.INT8_FLOAT_SCOPES,
                  debug_quantization=None, metadata="auto", labels=None):
    """Several TFLite files from one traced SavedModel: ``outputs`` maps a
    quantization to a path. Returns ``{quantization: description}``.

    ``metadata``: "auto" writes the TFLite Metadata of the MediaPipe Task the
    family declares for a one-signature file (export.mediapipe_tasks), and
    says in one line why not otherwise; "mediapipe" requires it; "none"
    skips it. ``labels``: a file of category names, one per line."""
    for quantization, output in outputs.items():
        if quantization not in QUANTIZATIONS:
            raise ExportError(f"unknown quantization {quantization!r}; expected one of "
                              f"{', '.join(QUANTIZATIONS)}")
        _check_writable(output, "tflite")
    if isinstance(representative_data, str):
        check_spec(representative_data)  # a bad spec fails before the slow part
    batch_size = 1 if batch_size is None else batch_size
    specs = signature_specs(model, batch_size, signature)
    specs, plan = mediapipe_tasks.plan(model, specs, metadata, labels)
    quantize_aware = qat.is_quantize_aware(model)  # its ranges come from training
    if plan is not None and quantize_aware and int8_io:
        raise ExportError("--int8_io on a quantization-aware model gives int8 inputs, which "
                          "MediaPipe does not feed; pass --metadata=none or drop --int8_io")
    for output in outputs.values():
        reap_stale_work_dirs(output)
    representative = None
    if "int8" in outputs and not quantize_aware:
        representative = _representative(specs, representative_data, calibration_samples,
                                         model)
    work = _work_dir(next(iter(outputs.values())))
    results = {}
    try:
        saved = os.path.join(work, "static_saved_model")
        if not quantize_aware:
            write_saved_model(saved, specs)
        for quantization, output in outputs.items():
            # Several files at once: int8_io is the int8 file's (one file: checked as given).
            file_int8_io = int8_io and (quantization == "int8" or len(outputs) == 1)
            if quantize_aware:
                content = qat.convert(model, specs, work, quantization, write_saved_model,
                                      file_int8_io, allow_flex, float_ops)
            else:
                content = tflite.convert(
                    saved, quantization, representative, int8_io=file_int8_io,
                    allow_flex=allow_flex, signature_keys=sorted(specs), float_ops=float_ops,
                    float_scopes=float_scopes,
                    debug_report=debug_quantization if quantization == "int8" else None,
                    io_type="uint8" if plan is not None else "int8")
            ops = tflite.model_ops(content)
            if ops["flex"] and not allow_flex:
                raise ExportError(f"the converted file uses flex ops {ops['flex']}, which the "
                                  "LiteRT interpreter cannot run; pass --allow_flex to keep them")
            if plan is not None:
                content = mediapipe_tasks.attach(content, plan, file_int8_io)
            tmp = os.path.join(_work_dir(output), "model.tflite")
            try:
                with open(tmp, "wb") as f:
                    f.write(content)
                _replace(tmp, output)
            finally:
                shutil.rmtree(os.path.dirname(tmp), ignore_errors=True)
            results[quantization] = {**_describe(output, "tflite", quantization, specs,
                                                 batch_size), "ops": ops}
            if plan is not None:
                results[quantization]["mediapipe"] = mediapipe_tasks.describe(plan)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def _work_dir(output, kind="tmp"):
    """A temporary folder next to ``output`` (same file system: rename is atomic),
    named ``.NAME.tmp-PID@HOST-XXXXXXXX`` so that a later run can tell whether the
    export that made it is still alive (``reap_stale_work_dirs``)."""
    return tempfile.mkdtemp(
        dir=os.path.dirname(os.path.abspath(output)),
        prefix=f".{os.path.basename(output)}.{kind}-{os.getpid()}@{socket.gethostname()}-")


LEGACY_STALE_SECONDS = 24 * 3600


def reap_stale_work_dirs(output):
    """Removes the temporary folders that killed exports left beside ``output``
    (to any name): those of this host whose process is gone, and older unnamed
    ones (``.NAME.tmp_XXXXXXXX``, before the PID was in the name) untouched for
    a day. A live export's folder, or another host's, is left alone. Says what
    it removed in one line on stderr; returns the removed paths."""
    parent = os.path.dirname(os.path.abspath(output))
    base = os.path.basename(output)
    # Any output's folder (by pattern): a killed export to another name leaves
    # its folder here too, and no later export of that name may ever come.
    ours = re.compile(r"^\..+\.(?:tmp|old)-(\d+)@(.+)-[a-z0-9_]{8}$")
    legacy = re.compile(rf"^\.{re.escape(base)}\.tmp_[a-z0-9_]{{8}}$")
    host, removed = socket.gethostname(), []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        path = os.path.join(parent, name)
        if not os.path.isdir(path):
            continue
        if m := ours.match(name):
            stale = m.group(2) == host and not _alive(int(m.group(1)))
        elif legacy.match(name):
            stale = time.time() - os.path.getmtime(path) > LEGACY_STALE_SECONDS
        else:
            continue
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        print(f"note: removed {len(removed)} temporary folder(s) of killed exports: "
              f"{', '.join(os.path.basename(p) for p in removed)}", file=sys.stderr)
    return removed


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _describe(output, format, quantization, specs, batch_size):
    return {"path": output, "format": format, "quantization": quantization,
            "signatures": {k: {"inputs": [list(map(str, (n, s, d))) for n, s, d in v[1]],
                               "outputs": v[2]} for k, v in specs.items()},
            "batch_size": batch_size, "size_bytes": _size(output)}


def _representative(specs, representative_data, calibration_samples, model=None):
    if representative_data is None:
        raise ExportError("quantization='int8' needs --representative_data (a dataset "
                          "spec such as digits:train, or an array) to calibrate")
    if calibration_samples < 1:
        raise ExportError(f"calibration_samples must be >= 1, got {calibration_samples}")
    representative = {}
    for key, (_, inputs, _) in specs.items():
        arrays, _ = sample_inputs(inputs, representative_data, calibration_samples, "train",
                                  model=model, signature=key)
        representative[key] = _static_rows(arrays, inputs[0][1][0])
    return representative


def _size(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    return os.path.getsize(path)


def keras_int8(model):
    """A copy of ``model`` with Keras 3's int8 weight quantization
    (``Model.quantize("int8")``): Keras / SavedModel inference only."""
    clone = type(model).from_config(model.get_config())
    clone.set_weights(model.get_weights())
    try:
        clone.quantize("int8")
    except Exception as e:  # Keras raises NotImplementedError/ValueError per layer type
        raise ExportError(f"Keras cannot int8-quantize {type(model).__name__}: {e}") from e
    return clone


# ---------------------------------------------------------------- verify

def verify_export(model, result, verify_data=DEFAULT_VERIFY_DATA, num_samples=64):
    """Runs the exported file and Keras on the same inputs; per signature:
    max abs / relative difference, and classifier agreement / accuracy."""
    path, fmt = result["path"], result["format"]
    if fmt == "saved_model" and result["quantization"] == "int8":
        model = keras_int8(model)
    specs = signature_specs(model, result["batch_size"], None)
    specs = {k: v for k, v in specs.items() if k in result["signatures"]}
    report = {}
    num_classes = (model.get_zoo_config().get("num_classes")
                   if hasattr(model, "get_zoo_config") else None)
    for key, (_, inputs, _) in specs.items():
        batch = inputs[0][1][0]
        family = (model.representative_inputs(verify_data, _split(verify_data), num_samples,
                                              key)
                  if isinstance(verify_data, str) and hasattr(model, "representative_inputs")
                  else None)
        data = verify_data if family is not None or all(is_image(s, d) for _, s, d in inputs) \
            else "synthetic"
        arrays, labels = sample_inputs(inputs, data, num_samples, _split(data), model=model,
                                       signature=key)
        with qat.reference_mode(model, result["quantization"], fmt):
            lockstep = key in getattr(model, "lockstep_signatures", ())
            reference = verify.keras_outputs(keras_functions(specs)[key], arrays, batch, lockstep)
        arrays = _as_exported(arrays, result["signatures"][key]["inputs"])
        exported = (verify.saved_model_outputs(path, key, arrays, batch)
                    if fmt == "saved_model" else verify.tflite_outputs(path, key, arrays))
        n = len(next(iter(exported.values())))
        reference = {k: v[:n] for k, v in reference.items()}
        labels = None if labels is None else labels[:n]
        report[key] = {"num_samples": n, **verify.parity(exported, reference),
                       **verify.classification(exported, reference, labels, num_classes)}
    return report


def _as_exported(arrays, exported_inputs):
    """Grey images repeated to RGB where the file takes RGB (a MediaPipe image
    task's file converts to grey itself: the same grey image either way)."""
    import ast

    out = dict(arrays)
    for name, shape, _ in exported_inputs:
        shape = ast.literal_eval(shape)
        if name in out and out[name].ndim == 4 and out[name].shape[-1] == 1 \
                and shape[-1] == 3:
            out[name] = np.repeat(out[name], 3, axis=-1)
    return out


def _split(spec):
    parts = spec.split(":")
    return parts[-1] if len(parts) > 1 and parts[-1] in ("train", "test") else "test"


# ---------------------------------------------------------------- CLI

def _define_flags():
    from absl import flags

    flags.DEFINE_string("preset", None, "registry name or preset folder")
    flags.DEFINE_string("model_dir", None, "training run dir (uses best/, else last/)")
    flags.DEFINE_enum("format", "tflite", FORMATS, "output format")
    flags.DEFINE_enum("quantization", "none", QUANTIZATIONS,
                      "TFLite precision; for saved_model, int8 = Keras Model.quantize")
    flags.DEFINE_string("representative_data", None,
                        "dataset spec calibrating int8, e.g. digits:train, tfds:mnist:train")
    flags.DEFINE_integer("calibration_samples", 200, "calibration samples for int8")
    flags.DEFINE_bool("int8_io", False, "int8 inputs/outputs (integer-only accelerators)")
    flags.DEFINE_string("signature", None, "export only this signature")
    flags.DEFINE_integer("batch_size", None, "static batch (TFLite default 1; "
                         "SavedModel default dynamic)")
    flags.DEFINE_string("output", None, "output file (tflite) or folder (saved_model)")
    flags.DEFINE_bool("verify", False, "compare the exported file with Keras")
    flags.DEFINE_string("verify_data", DEFAULT_VERIFY_DATA, "labelled set for --verify")
    flags.DEFINE_integer("verify_samples", 256, "inputs compared by --verify")
    flags.DEFINE_bool("benchmark", False, "LiteRT latency, size, ops, XNNPACK delegation")
    flags.DEFINE_integer("num_threads", 1, "interpreter threads for --benchmark")
    flags.DEFINE_integer("benchmark_runs", 200, "timed runs for --benchmark")
    flags.DEFINE_bool("allow_flex", False, "allow flex (SELECT_TF_OPS) ops; LiteRT's "
                      "Python interpreter cannot run them")
    flags.DEFINE_list("float_ops", list(tflite.INT8_FLOAT_OPS),
                      "TFLite ops kept in float under int8 (selective quantization)")
    flags.DEFINE_list("float_scopes", list(tflite.INT8_FLOAT_SCOPES),
                      "name scopes kept in float under int8")
    flags.DEFINE_string("debug_quantization", None,
                        "write the QuantizationDebugger per-layer error CSV here")
    flags.DEFINE_integer("prefill_length", None, "litertlm: tokens per prefill call "
                         "(default: the model's prefill_length)")
    flags.DEFINE_integer("context_length", None, "litertlm: key/value cache positions "
                         "(default: the model's max_positions)")
    flags.DEFINE_enum("metadata", "auto", mediapipe_tasks.METADATA_MODES,
                      "TFLite Metadata for MediaPipe Tasks: auto (where the file's task is "
                      "known), mediapipe (required), none")
    flags.DEFINE_string("labels", None, "category names for MediaPipe classifiers, one per "
                        "line (default: the model's label_names)")
    return flags.FLAGS


def check_spec(spec, default_split="train"):
    """Parses an image or a text dataset spec (gettext_packages:train calibrates
    BERT), raising its loader's one-line error on one neither knows."""
    from keras_zoo.data import is_text_spec, parse_spec, text

    return (text.parse_spec if is_text_spec(spec) else parse_spec)(spec, default_split)


def check_flags(FLAGS, argv):
    """Every flag a user can get wrong, before the model is loaded: one
    ExportError naming the flag (positional words are refused, as absl would
    otherwise drop them: ``--int8_io false`` is not ``--int8_io=false``)."""
    if len(argv) > 1:
        raise ExportError(f"unexpected arguments {argv[1:]}; flags are written --name=value "
                          "(booleans: --int8_io / --noint8_io)")
    for name in ("batch_size", "calibration_samples", "verify_samples", "num_threads",
                 "benchmark_runs", "prefill_length", "context_length"):
        value = FLAGS[name].value
        if value is not None and value < 1:
            raise ExportError(f"--{name} must be a positive integer, got {value}")
    if FLAGS.representative_data is not None:
        check_spec(FLAGS.representative_data)
        if (FLAGS.format, FLAGS.quantization) != ("tflite", "int8"):
            raise ExportError(
                f"--representative_data calibrates --format=tflite --quantization=int8 only; "
                f"this export is --format={FLAGS.format} --quantization={FLAGS.quantization}")
    if FLAGS.verify:
        check_spec(FLAGS.verify_data, "test")
    if FLAGS.benchmark and FLAGS.format != "tflite":
        raise ExportError("--benchmark measures TFLite files; use --format=tflite")
    if FLAGS.verify and FLAGS.format == "litertlm":
        raise ExportError("--verify compares SavedModel / TFLite files with Keras; a .litertlm "
                          "bundle is checked by running it (export.litertlm.LiteRTLMGenerator)")


def main(argv):
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    FLAGS = _FLAGS
    check_flags(FLAGS, argv)
    model = load_model(FLAGS.preset, FLAGS.model_dir)
    output = FLAGS.output or {"tflite": f"{model.name}_{FLAGS.quantization}.tflite",
                              "litertlm": f"{model.name}.litertlm"}.get(
                                  FLAGS.format, f"{model.name}_saved_model")
    result = export_model(
        model, output, FLAGS.format, FLAGS.quantization, FLAGS.signature, FLAGS.batch_size,
        FLAGS.representative_data, FLAGS.calibration_samples, FLAGS.int8_io,
        FLAGS.allow_flex, tuple(FLAGS.float_ops), tuple(FLAGS.float_scopes),
        FLAGS.debug_quantization, FLAGS.prefill_length, FLAGS.context_length,
        FLAGS.metadata, FLAGS.labels)
    if FLAGS.verify:
        result["verify"] = verify_export(model, result, FLAGS.verify_data,
                                         FLAGS.verify_samples)
    if FLAGS.benchmark:
        result["benchmark"] = {k: verify.benchmark(output, k, FLAGS.num_threads,
                                                   FLAGS.benchmark_runs)
                               for k in result["signatures"]}
    print(json.dumps(result, indent=2, default=str))


_FLAGS = None


def run():
    """Console script entry point (keras-zoo-export)."""
    from keras_zoo.data.datasets import DatasetError
    from keras_zoo.presets import PresetError

    global _FLAGS
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    _FLAGS = _define_flags()
    run_guarded(main, (ExportError, PresetError, DatasetError))


def run_guarded(main, errors):
    """``absl.app.run(main)``, printing an error of the ``errors`` types, a
    misspelt flag or a bad flag value as one line ``error: ...`` (exit
    status 2) instead of a traceback."""
    from absl import app, flags

    def guarded(argv):
        try:
            main(argv)
        except errors as e:
            _fail(str(e))

    def parse_flags(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:
            _fail(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)

    app.run(guarded, flags_parser=parse_flags)


def _fail(message):
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


if __name__ == "__main__":
    run()
