"""TFLite latency of trained LeNet, ResNet and ViT digit classifiers in four precisions.

    python -m benchmarks.export_latency            # ~2-4 min: trains, exports, times
    python -m benchmarks.export_latency --quick    # smoke run (untrained, 20 runs)

For each model: float32, float16, dynamic-range int8 and full int8 TFLite
files (static batch 1), timed with the ai_edge_litert interpreter on one
thread (median over --runs after --warmup), side by side, with the int8 file's
top-1 agreement with Keras on digits:test. Issue 5's target: full int8 at most
0.6x the float32 latency with the whole graph delegated to XNNPACK; the last
columns say whether each model meets it and, if not, which ops XNNPACK left out.
"""

import argparse
import os
import shutil
import tempfile

MODELS = ("lenet5", "resnet_tiny_digits", "vit_tiny_digits")
MODES = ("none", "float16", "dynamic_int8", "int8")
TARGET_RATIO = 0.6


def measure(preset, work, epochs, runs, warmup, num_threads, calibration_samples,
            verify_samples=360):
    import keras

    import keras_zoo
    from export import export, report, verify

    keras.utils.set_random_seed(0)  # the same initial weights every run
    model = keras_zoo.from_preset(preset)
    default_epochs, learning_rate = report.DIGIT_RECIPES[preset]
    report.train_classifier(model, default_epochs if epochs is None else epochs,
                            learning_rate)
    row = {"preset": preset}
    files = export.export_tflite(
        model, {q: os.path.join(work, f"{preset}_{q}.tflite") for q in MODES},
        representative_data="digits:train", calibration_samples=calibration_samples,
        signature="serving_default")  # the classifier alone: delegation is inspected per file
    for quantization, result in files.items():
        row[quantization] = verify.benchmark(result["path"], num_threads=num_threads,
                                             runs=runs, warmup=warmup)
    check = export.verify_export(model, files["int8"], "digits:test", num_samples=verify_samples)
    row["int8_agreement"] = check["serving_default"]["top1_agreement"]
    row["keras_accuracy"] = check["serving_default"].get("keras_accuracy")
    return row


def table(rows):
    header = ("| model | float32 us | float16 us | dyn-int8 us | int8 us | int8 / f32 | "
              "int8 top-1 agree | int8 XNNPACK | target met |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        ratio = r["int8"]["latency_us_median"] / r["none"]["latency_us_median"]
        whole = r["int8"]["fully_delegated"]
        xnn = "whole graph" if whole else \
            "not: " + ", ".join(sorted(set(r["int8"]["undelegated_ops"])))
        met = "yes" if ratio <= TARGET_RATIO and whole else "no"
        cells = " | ".join(f"{r[m]['latency_us_median']:.0f}" for m in MODES)
        lines.append(f"| {r['preset']} | {cells} | {ratio:.2f} | "
                     f"{100 * r['int8_agreement']:.1f} % | {xnn} | {met} |")
    return "\n".join(lines)


def main(argv=None):
    doc = __doc__.strip()
    p = argparse.ArgumentParser(description=doc.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(doc.splitlines()[1:]))
    p.add_argument("--quick", action="store_true",
                   help="untrained models, 20 runs: a smoke run")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated subset")
    p.add_argument("--epochs", type=int, default=None,
                   help="training epochs (default: export.report.DIGIT_RECIPES)")
    p.add_argument("--runs", type=int, default=500, help="timed invocations per file")
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--num_threads", type=int, default=1)
    p.add_argument("--calibration_samples", type=int, default=200)
    p.add_argument("--verify_samples", type=int, default=360, help="digits:test images")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.runs, args.warmup, args.calibration_samples = 0, 20, 3, 16
        args.verify_samples = 32
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    work = tempfile.mkdtemp(prefix="export_latency_")
    try:
        rows = [measure(m, work, args.epochs, args.runs, args.warmup, args.num_threads,
                        args.calibration_samples, args.verify_samples)
                for m in args.models.split(",")]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"LiteRT, {args.num_threads} thread(s), batch 1, median of {args.runs} runs "
          f"(target: int8 <= {TARGET_RATIO}x float32 and whole graph on XNNPACK)"
          + ("  [--quick: numbers mean nothing]" if args.quick else ""))
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
