"""Inference speed: batch-1 latency and batch-32 throughput of forward passes,
keras_zoo vs keras-hub vs timm, plus keras_zoo's exported TFLite float32 and
int8 files (when the ``export`` package is present), each in its own process.

    python -m benchmarks.inference_throughput                  # ViT-S/16 + ResNet-50 at 224
    python -m benchmarks.inference_throughput --models vit --no-tflite
    python -m benchmarks.inference_throughput --quick          # smoke run (tiny models)

TFLite files have a static batch; they are exported at batch 1 (the phone
case) and run by the LiteRT interpreter with XNNPACK on the same threads as
the others; int8 is calibrated on random images (speed does not depend on
calibration quality).
"""

import sys

from benchmarks import cli, common, models

MODULE = "benchmarks.inference_throughput"
TFLITE_QUANTIZATIONS = ("none", "int8")  # TFLite float32 and full int8


def keras_infer(impl, arch, config, batch_size, warmup, steps, jit_compile, seed=0):
    import keras
    import numpy as np

    keras.utils.set_random_seed(seed)
    model = models.build_keras(impl, arch, config)
    model.compile(jit_compile=jit_compile)  # predict_on_batch uses the compiled predict step
    s = config["image_size"]
    rng = np.random.default_rng(seed)
    out = {"params": models.keras_parameter_count(model), "jit": str(model.jit_compile)}
    for key, batch in (("latency", 1), ("batch", batch_size)):
        x = keras.ops.convert_to_tensor(rng.random((batch, s, s, 3), dtype="float32"))
        out[key] = common.median_seconds(lambda x=x: model.predict_on_batch(x), warmup, steps)[0]
    return out


def timm_infer(arch, config, batch_size, warmup, steps, seed=0):
    import torch

    torch.manual_seed(seed)
    model = models.build_timm(arch, config).eval()
    s = config["image_size"]
    out = {"params": models.torch_parameter_count(model),
           "jit": f"eager (torch {torch.__version__}, {torch.get_num_threads()} threads)"}
    with torch.inference_mode():
        for key, batch in (("latency", 1), ("batch", batch_size)):
            x = torch.rand(batch, 3, s, s)
            out[key] = common.median_seconds(lambda x=x: model(x), warmup, steps)[0]
    return out


def tflite_infer(arch, config, quantization, warmup, steps, calibration_samples, seed=0):
    """keras_zoo's model through the project's exporter, timed by its benchmark()."""
    import os
    import tempfile

    import keras
    import numpy as np

    from export import benchmark, export_model

    keras.utils.set_random_seed(seed)
    model = models.build_keras("keras_zoo", arch, config)
    s = config["image_size"]
    calibration = np.random.default_rng(seed).random(
        (calibration_samples, s, s, 3), dtype="float32")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{arch}_{quantization}.tflite")
        export_model(model, path, format="tflite", quantization=quantization, batch_size=1,
                     representative_data=calibration if quantization == "int8" else None,
                     calibration_samples=calibration_samples)
        result = benchmark(path, num_threads=os.cpu_count(), runs=steps, warmup=warmup)
    return {"latency": result["latency_us_median"] / 1e6, "batch": None,
            "params": models.keras_parameter_count(model),
            "jit": f"LiteRT {'float32' if quantization == 'none' else quantization}, "
                   f"{os.cpu_count()} threads, {result['size_bytes'] / 2**20:.1f} MiB"}


HANDLERS = {"matmul": common.matmul_job, "keras": keras_infer, "timm": timm_infer,
            "tflite": tflite_infer}


def plan(args):
    jobs = [cli.matmul_entry(args.quick)]
    for arch in args.models:
        config = models.config_for(arch, args.quick)
        base = {"arch": arch, "config": config, "warmup": args.warmup, "steps": args.steps}
        jobs += cli.implementation_jobs(arch, args.implementations, args.variants,
                                        {"batch_size": args.batch_size, **base})
        if args.tflite and "keras_zoo" in args.implementations:
            for q in TFLITE_QUANTIZATIONS:
                jobs.append(({"impl": "keras_zoo TFLite", "arch": arch},
                             {"kind": "tflite", "group": "keras",
                              "args": {"quantization": q,
                                       "calibration_samples": 4 if args.quick else 16,
                                       **base}}))
    return jobs


def skip_tflite(jobs):
    if any(job["kind"] == "tflite" for _, job in jobs) and not common.installed("export"):
        return ([(label, job) for label, job in jobs if job["kind"] != "tflite"],
                ["TFLite: not available (the export package is not installed)"])
    return jobs, []


def report(args, jobs, results, notes):
    rate, lines = cli.matmul_header(
        f"Inference throughput (batch 1 latency, batch {args.batch_size} throughput, float32)",
        results[0])
    rows, best = [], {}
    for label, name, flops, result in cli.each_result(jobs, results, args.quick, rows, 9):
        impl = label["impl"]
        ips = args.batch_size / result["batch"] if result["batch"] else None
        gflops = ips * flops / 1e9 if ips else flops / result["latency"] / 1e9
        # int8 arithmetic (VNNI) is not float32: no share of the float32 matmul rate.
        share = gflops / rate if rate and "int8" not in result["jit"] else None
        cli.keep_best(best, label, impl, ips or 0.0)
        default = " (default)" if label.get("default") else ""
        rows.append([name, impl, f"{result['params']:,}", result["jit"] + default,
                     common.fmt_significant(result["latency"] * 1e3),
                     common.fmt(1 / result["latency"], 1),
                     common.fmt(ips, 1), common.fmt(gflops),
                     common.fmt(share * 100 if share else None, 0, " %")])
    lines.append(common.markdown_table(
        ["model", "implementation", "params", "runtime", "batch-1 ms", "batch-1 img/s",
         f"batch-{args.batch_size} img/s", "GFLOP/s", "of matmul"], rows))
    lines += ["", "GFLOP/s and share: at the large batch (batch 1 for TFLite).",
              ("Comparisons (each library at its best row, with or without XLA; "
              "the issue sets no inference target):")]
    for arch in args.models:
        zoo = best.get((arch, "keras_zoo"))
        for peer in ("keras_hub", "timm"):
            if zoo and best.get((arch, peer)):
                lines.append(f"- {models.display_name(arch, args.quick)} batch-"
                             f"{args.batch_size} keras_zoo / {peer}: {zoo / best[(arch, peer)]:.2f}x")
    lines += cli.footer(notes, args.quick)
    return "\n".join(lines)


def parse_args(argv):
    p = cli.argument_parser(__doc__, batch_size=32, warmup=3, steps=10)
    p.add_argument("--tflite", action=cli.BooleanOptionalAction, default=True,
                   help="also export keras_zoo to TFLite float32 + int8 and time LiteRT")
    args = cli.finish_args(p, argv)
    if args.quick:
        args.batch_size = 4
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if common.worker_main(argv, HANDLERS):
        return
    args = parse_args(argv)
    jobs, notes = common.skip_missing(plan(args))
    jobs, tflite_notes = skip_tflite(jobs)
    results = common.run_plan(MODULE, jobs, isolate=not args.quick, rounds=args.rounds,
                              key="latency")
    print(report(args, jobs, results, notes + tflite_notes))


if __name__ == "__main__":
    main()
