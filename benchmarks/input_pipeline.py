"""Input pipeline: tf.data throughput against what the model consumes.

1. Pipelines alone (images/s, no model): the bundled ``digits`` set through
   ``keras_zoo.data.pipeline`` at the model's input size, and DINO's
   multi-crop (``keras_zoo.data.multicrop``, 2 global + N local views) on top
   of it; ``synthetic`` as the reference.
2. Training images/s on the real pipeline vs on one synthetic batch held in
   memory and repeated (what train_throughput measures): the share says how
   much of the model's time the pipeline steals (2 cores: tf.data and the
   train step compete for them).

    python -m benchmarks.input_pipeline
    python -m benchmarks.input_pipeline --quick      # smoke run
"""

import sys
import time

from benchmarks import cli, common

MODULE = "benchmarks.input_pipeline"
TARGET_REAL_SHARE = 0.95
# The models fed: the digits-sized ViT the tests train (32x32x1), and
# ViT-S/16 at 224x224x3 (digits upsampled: every batch is resized on the host).
CONSUMERS = {
    "vit_tiny_digits": {"preset": "vit_tiny_digits", "overrides": {}},
    "vit_small_patch16_224": {"preset": "vit_small_patch16_224", "overrides": {"num_classes": 10}},
}
QUICK_CONSUMERS = {
    "vit_tiny_digits": {"preset": "vit_tiny_digits", "overrides": {}},
}


def _real_pipeline(spec, image_size, channels, batch_size, seed=0):
    from keras_zoo.data import datasets

    ds, _ = datasets.load(spec, image_shape=(image_size, image_size, channels), seed=seed)
    return datasets.pipeline(ds, batch_size, image_size, channels, training=True, seed=seed,
                             repeat=True)


def pipeline_job(spec, image_size, channels, batch_size, warmup, steps, multicrop=None):
    """Images/s of a pipeline iterated on its own (median over chunks of batches)."""
    ds = _real_pipeline(spec, image_size, channels, batch_size)
    if multicrop:
        from keras_zoo.data.multicrop import MultiCrop

        ds = ds.map(MultiCrop(seed=0, **multicrop), num_parallel_calls=-1).prefetch(-1)
    iterator = iter(ds)
    chunk = 5  # batches per timed call: one next() is microseconds for digits

    def take():
        for _ in range(chunk):
            next(iterator)

    median = common.median_seconds(take, warmup, steps)[0]
    return {"images_per_second": chunk * batch_size / median}


def fit_job(preset, overrides, data, batch_size, warmup, steps, steps_per_execution,
            jit_compile=False, block=8):
    """Training images/s on the ``data`` pipeline and on one synthetic batch held
    in memory, in one process, alternating blocks of ``block`` compiled calls
    so that both see the same machine load; medians over ``steps`` rounds
    after ``warmup`` rounds (the first compiles). Calls the train function
    ``Model.fit`` itself runs (in-graph ``get_next`` on the iterator), so the
    pipeline's threads compete for the cores exactly as in ``fit``."""
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_zoo
    from keras_zoo.training import AdamW

    keras.utils.set_random_seed(0)
    model = keras_zoo.from_preset(preset, load_weights=False, **overrides)
    model.compile(optimizer=AdamW(1e-4), **model.compile_defaults(),
                  jit_compile=jit_compile, steps_per_execution=steps_per_execution)
    image_size, channels = model.inputs[0].shape[1], model.inputs[0].shape[3]
    rng = np.random.default_rng(0)
    x = rng.random((batch_size, image_size, image_size, channels), dtype="float32")
    y = rng.integers(0, 10, batch_size).astype("int32")
    iterators = {"synthetic": iter(tf.data.Dataset.from_tensors((x, y)).repeat()),
                 "real": iter(_real_pipeline(data, image_size, channels, batch_size))}
    model.make_train_function()

    def run_block(iterator):
        for _ in range(block):
            logs = model.train_function(iterator)
        float(logs["loss"])  # waits for the last step

    times = {k: [] for k in iterators}
    for i in range(warmup + steps):
        for kind, iterator in iterators.items():
            start = time.perf_counter()
            run_block(iterator)
            if i >= warmup:
                times[kind].append(time.perf_counter() - start)
    images = block * steps_per_execution * batch_size
    out = {k: images / float(np.median(t)) for k, t in times.items()}
    return {**out, "image_shape": [image_size, image_size, channels]}


HANDLERS = {"pipeline": pipeline_job, "fit": fit_job}


def plan(args):
    size, local = (32, 16) if args.quick else (224, 96)
    run = {"batch_size": args.batch_size, "warmup": args.warmup, "steps": args.steps}
    jobs = []
    for label, spec, image_size, channels, multicrop in (
            ("digits", "digits", 32, 1, None),
            ("digits", "digits", size, 3, None),
            ("synthetic", "synthetic:2048", size, 3, None),
            ("digits + DINO multi-crop", "digits", size, 3,
             {"global_crop_size": size, "local_crop_size": local,
              "num_local_crops": 2 if args.quick else 8})):
        if multicrop and not common.installed("keras_zoo.data.multicrop"):
            continue
        jobs.append(({"what": label, "shape": f"{image_size}x{image_size}x{channels}",
                      "multicrop": multicrop},
                     {"kind": "pipeline", "group": "keras",
                      "args": {"spec": spec, "image_size": image_size, "channels": channels,
                               "multicrop": multicrop, **run}}))
    consumers = QUICK_CONSUMERS if args.quick else CONSUMERS
    for name, consumer in consumers.items():
        small = consumer["preset"].endswith("digits")
        jobs.append(({"what": name},
                     {"kind": "fit", "group": "keras",
                      "args": {**consumer, "data": "digits", "batch_size": args.batch_size,
                               "warmup": 1 if args.quick else 2, "steps": args.fit_rounds,
                               "block": 20 if small and not args.quick else 2,
                               "steps_per_execution": args.steps_per_execution,
                               "jit_compile": args.jit_compile}}))
    return jobs


def report(args, jobs, results):
    lines = [f"## Input pipeline (batch {args.batch_size})", "", common.machine_line(), ""]
    # What the model eats at each input shape (synthetic-tensor training rate).
    consumption = {"x".join(map(str, r["image_shape"])): (label["what"], r["synthetic"])
                   for (label, job), r in zip(jobs, results)
                   if job["kind"] == "fit" and "error" not in r}
    rows = []
    for (label, job), result in zip(jobs, results):
        if job["kind"] != "pipeline":
            continue
        views = ""
        if label["multicrop"]:
            m = label["multicrop"]
            views = (f"2 x {m['global_crop_size']}^2 + {m['num_local_crops']} x "
                     f"{m['local_crop_size']}^2 views")
        if "error" in result:
            rows.append([label["what"], label["shape"], views or "-", "error: " + result["error"],
                         "-"])
            continue
        ips = result["images_per_second"]
        consumer = consumption.get(label["shape"]) if not label["multicrop"] else None
        headroom = f"{ips / consumer[1]:,.0f}x {consumer[0]}" if consumer else "-"
        rows.append([label["what"], label["shape"], views or "-", common.fmt(ips, 0), headroom])
    lines += ["Pipelines alone:", "", common.markdown_table(
        ["pipeline", "image", "views", "images/s", "vs model's training rate"], rows), ""]
    rows, target_lines = [], []
    for (label, job), result in zip(jobs, results):
        if job["kind"] != "fit":
            continue
        name = label["what"]
        if "error" in result:
            rows.append([name, "-", "-", "-", "error: " + result["error"]])
            continue
        share = result["real"] / result["synthetic"]
        shape = "x".join(map(str, result["image_shape"]))
        rows.append([name, shape, common.fmt(result["synthetic"], 1),
                     common.fmt(result["real"], 1), common.fmt(share * 100, 1, " %")])
        target_lines.append(common.target_line(
            f"{name}: real pipeline / synthetic tensors", share * 100,
            TARGET_REAL_SHARE * 100, unit=" %"))
    lines += [(f"Training (the train function `Model.fit` runs, jit_compile={args.jit_compile}, "
              f"steps_per_execution={args.steps_per_execution}; real and synthetic alternate "
              f"in one process, median of {args.fit_rounds} rounds):"),
              "", common.markdown_table(
                  ["model", "input", "synthetic img/s", "digits pipeline img/s", "real / synthetic"],
                  rows), "", "Targets:"]
    lines += target_lines or ["- not measured (see errors above)"]
    if not common.installed("keras_zoo.data.multicrop"):
        lines.append("- note: DINO multi-crop: not available (keras_zoo.data.multicrop missing)")
    if args.quick:
        lines.append("- note: " + cli.QUICK_NOTE)
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if common.worker_main(argv, HANDLERS):
        return
    p = cli.argument_parser(__doc__, batch_size=16, warmup=2, steps=10, model_choice=False)
    p.add_argument("--fit_rounds", type=int, default=6,
                   help="timed rounds of (real block, synthetic block) per model")
    p.add_argument("--steps_per_execution", type=int, default=1,
                   help="Model.fit steps per compiled call (experiments.train's default: 1)")
    p.add_argument("--jit_compile", action=cli.BooleanOptionalAction, default=False,
                   help="XLA-compile the train step (experiments.train's default on CPU: off; "
                        "on TPU and GPU: on)")
    args = cli.finish_args(p, argv)
    if args.steps_per_execution <= 0:
        p.error(f"--steps_per_execution must be positive, got {args.steps_per_execution}")
    if args.quick:
        args.batch_size, args.fit_rounds = 16, 1
    jobs = plan(args)
    results = common.run_plan(MODULE, jobs, isolate=not args.quick)
    print(report(args, jobs, results))


if __name__ == "__main__":
    main()
