"""Runs exported files next to the Keras model: parity, accuracy, latency.

Parity is ``max |exported - keras|`` and the same divided by
``max(1, max |keras|)`` ("relative to output scale": logits of 30 and
logits of 0.3 are held to the same relative standard). Classifier outputs
(``(batch, num_classes)``) also report top-1 agreement and, on a labelled
set with the same number of classes, the accuracy of both.
"""

import time

import numpy as np
import tensorflow as tf

from export import tflite


def parity(exported, reference):
    """{"max_abs_diff", "relative_diff"} over every output."""
    diff, scale = 0.0, 1.0
    for name, ref in reference.items():
        got = np.asarray(exported[name], "float32")
        ref = np.asarray(ref, "float32")
        if got.shape != ref.shape:
            raise tflite.ExportError(f"output {name!r}: exported shape {got.shape} != Keras "
                                     f"shape {ref.shape}")
        diff = max(diff, float(np.max(np.abs(got - ref))) if ref.size else 0.0)
        scale = max(scale, float(np.max(np.abs(ref))) if ref.size else 0.0)
    return {"max_abs_diff": diff, "relative_diff": diff / scale}


def classification(exported, reference, labels=None, num_classes=None):
    """Top-1 agreement (and accuracies when ``labels`` fit) for a (N, num_classes) output."""
    if len(reference) != 1:
        return {}
    name = next(iter(reference))
    ref, got = np.asarray(reference[name]), np.asarray(exported[name])
    if ref.ndim != 2 or not num_classes or ref.shape[1] != num_classes:
        return {}
    out = {"top1_agreement": float(np.mean(ref.argmax(1) == got.argmax(1)))}
    if labels is not None and int(labels.max()) < ref.shape[1]:
        out["keras_accuracy"] = float(np.mean(ref.argmax(1) == labels))
        out["exported_accuracy"] = float(np.mean(got.argmax(1) == labels))
    return out


def keras_outputs(fn, inputs, batch_size, lockstep=False):
    """Runs a Keras serving function over the rows of ``inputs`` that fill whole
    static batches, 128 rows per call (Keras takes any batch; one call per
    row would dominate the verification time). ``lockstep``: the signature's
    rows share a scalar input (a decoding position), so Keras runs at the
    exported batch size."""
    n = len(next(iter(inputs.values())))
    usable = n - n % (batch_size or 1)
    step = max(1, min(128, usable))
    if lockstep and batch_size:
        step = batch_size
    return _batched(lambda chunk: {k: np.asarray(v) for k, v in fn(**chunk).items()},
                    {k: a[:usable] for k, a in inputs.items()}, step, keep_tail=True)


def saved_model_outputs(path, signature, inputs, batch_size=None):
    loaded = tf.saved_model.load(path)
    if signature not in loaded.signatures:
        raise tflite.ExportError(f"SavedModel {path!r} has no signature {signature!r}; it has "
                                 f"{sorted(loaded.signatures)}")
    fn = loaded.signatures[signature]
    return _batched(lambda chunk: {k: v.numpy() for k, v in
                                   fn(**{n: tf.constant(a) for n, a in chunk.items()}).items()},
                    inputs, batch_size)


def _interpreter(path_or_bytes, num_threads=None):
    from ai_edge_litert.interpreter import Interpreter

    kw = {"model_content": path_or_bytes} if isinstance(path_or_bytes, bytes) \
        else {"model_path": str(path_or_bytes)}
    return Interpreter(num_threads=num_threads, **kw)


def tflite_outputs(path, signature, inputs):
    """Runs a .tflite signature over ``inputs`` (N rows) at its static batch."""
    interpreter = _interpreter(path)
    runner = _runner(interpreter, signature, path)
    details = runner.get_input_details()
    out_details = runner.get_output_details()
    batch = int(next(iter(details.values()))["shape"][0])

    def run(chunk):
        feed = {n: tflite.quantize_input(a, details[n]) for n, a in chunk.items()}
        result = runner(**feed)
        return {k: tflite.dequantize_output(v, out_details[k]) for k, v in result.items()}
    return _batched(run, inputs, batch)


def _runner(interpreter, signature, path):
    signatures = interpreter.get_signature_list()
    if signature not in signatures:
        raise tflite.ExportError(f"{path!r} has no signature {signature!r}; it has "
                                 f"{sorted(signatures)}")
    return interpreter.get_signature_runner(signature)


def _batched(fn, inputs, batch_size, keep_tail=False):
    n = len(next(iter(inputs.values())))
    step = batch_size or n
    usable = n if keep_tail else n - n % step
    if usable == 0:
        raise tflite.ExportError(f"need at least one full batch of {step} inputs, got {n}")
    parts = [fn({k: a[i:i + step] for k, a in inputs.items()}) for i in range(0, usable, step)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def benchmark(path, signature="serving_default", num_threads=1, runs=100, warmup=10, seed=0):
    """LiteRT latency of one signature (median and p90, microseconds), file
    size, ops, and whether XNNPACK runs the whole graph (single-signature
    files; None otherwise)."""
    interpreter = _interpreter(path, num_threads=num_threads)
    rng = np.random.default_rng(seed)

    def value(d):
        return tflite.quantize_input(rng.random(tuple(d["shape"]), dtype=np.float32), d)
    single = len(interpreter.get_signature_list()) <= 1
    if single:
        _runner(interpreter, signature, path)  # checks the name
        # One subgraph: time invoke() alone, without the Python dict plumbing
        # of the signature runner (tens of microseconds on a ~100 us model).
        interpreter = _interpreter(path, num_threads=num_threads)
        interpreter.allocate_tensors()
        for d in interpreter.get_input_details():
            interpreter.set_tensor(d["index"], value(d))
        step = interpreter.invoke
    else:
        runner = _runner(interpreter, signature, path)
        feed = {n: value(d) for n, d in runner.get_input_details().items()}
        step = lambda: runner(**feed)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    # The interpreter's node view covers subgraph 0 only: delegation is
    # inspected for single-signature files (export with --signature).
    partitions, undelegated = tflite.delegation(interpreter) if single else (None, None)
    with open(path, "rb") as f:
        content = f.read()
    return {
        "latency_us_median": float(np.median(times) * 1e6),
        "latency_us_p90": float(np.percentile(times, 90) * 1e6),
        "num_threads": num_threads,
        "size_bytes": len(content),
        "ops": tflite.model_ops(content),
        "xnnpack_partitions": partitions,
        "undelegated_ops": undelegated,
        "fully_delegated": (partitions == 1 and not undelegated) if single else None,
    }
