"""Input pipeline: tf.data throughput against what the model consumes.

1. Pipelines alone (images/s, no model): the bundled ``digits`` set through
   ``keras_zoo.data.pipeline`` at the model's input size, and DINO's
   multi-crop (``keras_zoo.data.multicrop``, 2 global + N local views) on top
   of it; ``synthetic`` as the reference.
2. ``Model.fit`` images/s on the real pipeline vs on one synthetic batch held
   in memory and repeated (what train_throughput measures): the share says
   how much of the model's time the pipeline steals (2 cores: tf.data and
   the train step compete for them).

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


def fit_job(preset, overrides, data, batch_size, warmup, steps, steps_per_execution):
    """Model.fit images/s: median epoch time over ``steps`` epochs of 8 batches
    after ``warmup`` epochs (the first compiles)."""
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_zoo

    keras.utils.set_random_seed(0)
    model = keras_zoo.from_preset(preset, load_weights=False, **overrides)
    model.compile(optimizer=keras.optimizers.AdamW(1e-4), **model.compile_defaults(),
                  jit_compile=True, steps_per_execution=steps_per_execution)
    image_size, channels = model.inputs[0].shape[1], model.inputs[0].shape[3]
    if data == "synthetic":
        rng = np.random.default_rng(0)
        x = rng.random((batch_size, image_size, image_size, channels), dtype="float32")
        y = rng.integers(0, 10, batch_size).astype("int32")
        ds = tf.data.Dataset.from_tensors((x, y)).repeat()
    else:
        ds = _real_pipeline(data, image_size, channels, batch_size)
    batches = 8 * steps_per_execution
    epoch_times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_times.append(time.perf_counter() - self.start)

    model.fit(ds, steps_per_epoch=batches, epochs=warmup + steps, callbacks=[Timer()],
              verbose=0)
    timed = sorted(epoch_times[warmup:])
    return {"images_per_second": batches * batch_size / timed[len(timed) // 2],
            "image_shape": [image_size, image_size, channels]}


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
    fit_run = {**run, "warmup": 1, "steps": 1 if args.quick else 3}
    for name, consumer in consumers.items():
        for data in ("synthetic", "digits"):
            jobs.append(({"what": name, "data": data},
                         {"kind": "fit", "group": "keras",
                          "args": {**consumer, "data": data,
                                   "steps_per_execution": args.steps_per_execution,
                                   **fit_run}}))
    return jobs


def report(args, jobs, results):
    lines = [f"## Input pipeline (batch {args.batch_size})", "", common.machine_line(), ""]
    rows = []
    for (label, job), result in zip(jobs, results):
        if job["kind"] != "pipeline":
            continue
        views = ""
        if label["multicrop"]:
            m = label["multicrop"]
            views = (f"2 x {m['global_crop_size']}^2 + {m['num_local_crops']} x "
                     f"{m['local_crop_size']}^2 views")
        rows.append([label["what"], label["shape"], views or "-",
                     common.fmt(result.get("images_per_second"), 0) if "error" not in result
                     else "error: " + result["error"]])
    lines += ["Pipelines alone:", "", common.markdown_table(
        ["pipeline", "image", "views", "images/s"], rows), ""]
    fits = {}
    for (label, job), result in zip(jobs, results):
        if job["kind"] == "fit":
            fits.setdefault(label["what"], {})[label["data"]] = result
    rows, target_lines = [], []
    for name, by_data in fits.items():
        synthetic, real = by_data.get("synthetic", {}), by_data.get("digits", {})
        errors = [r["error"] for r in (synthetic, real) if "error" in r]
        if errors:
            rows.append([name, "-", "-", "-", "error: " + errors[0]])
            continue
        share = real["images_per_second"] / synthetic["images_per_second"]
        shape = "x".join(map(str, real["image_shape"]))
        rows.append([name, shape, common.fmt(synthetic["images_per_second"], 1),
                     common.fmt(real["images_per_second"], 1), common.fmt(share * 100, 1, " %")])
        target_lines.append(common.target_line(
            f"{name}: real pipeline / synthetic tensors", share * 100,
            TARGET_REAL_SHARE * 100, unit=" %"))
    lines += [f"`Model.fit` (jit_compile=True, steps_per_execution={args.steps_per_execution}):",
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
    p.add_argument("--steps_per_execution", type=int, default=1,
                   help="Model.fit steps per compiled call (experiments.train's default: 1)")
    args = cli.finish_args(p, argv)
    if args.steps_per_execution <= 0:
        p.error(f"--steps_per_execution must be positive, got {args.steps_per_execution}")
    if args.quick:
        args.batch_size = 16
    jobs = plan(args)
    results = common.run_plan(MODULE, jobs, isolate=not args.quick)
    print(report(args, jobs, results))


if __name__ == "__main__":
    main()
