"""MediaPipe ImageClassifier latency per image vs our LiteRT call, on the same file.

    python -m benchmarks.mediapipe_latency             # ~1-2 min
    python -m benchmarks.mediapipe_latency --runs=50   # quicker

For LeNet, ResNet and ViT digit classifiers (untrained weights: latency does
not depend on them), exported with MediaPipe metadata in float32 and full
int8 (uint8 pixels in, float scores out, as MediaPipe wants): the median time of

* ``mediapipe``: ``vision.ImageClassifier.classify(mp.Image)`` on a 32x32 RGB
  uint8 image: preprocessing (resize/normalise), inference, top-k, labels;
* ``litert_invoke``: ``Interpreter.invoke()`` alone on the same file, one
  thread (``export.verify.benchmark``);
* ``litert_call``: our Python call, the signature runner with a numpy array.

Prints a Markdown table and the load average (the machine is shared).
"""

import argparse
import os
import statistics
import tempfile
import time

MODELS = ("lenet5", "resnet_tiny_digits", "vit_tiny_digits")
MODES = ("none", "int8")


def _median_us(step, runs, warmup):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def measure(preset, work, runs, warmup):
    import mediapipe as mp
    import numpy as np
    from mediapipe.tasks import python as mp_tasks
    from mediapipe.tasks.python import vision

    import keras_zoo
    from export import export, verify

    model = keras_zoo.from_preset(preset)
    labels = os.path.join(work, "labels.txt")
    with open(labels, "w") as f:
        f.write("\n".join(str(i) for i in range(10)) + "\n")
    files = export.export_tflite(
        model, {q: os.path.join(work, f"{preset}_{q}.tflite") for q in MODES},
        signature="serving_default", representative_data="digits:train",
        calibration_samples=50, int8_io=True, labels=labels)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    row = {"preset": preset}
    for quantization, result in files.items():
        path = result["path"]
        options = vision.ImageClassifierOptions(
            base_options=mp_tasks.BaseOptions(model_asset_path=path), max_results=1)
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels)
        with vision.ImageClassifier.create_from_options(options) as classifier:
            mediapipe_us = _median_us(lambda: classifier.classify(image), runs, warmup)
        invoke_us = verify.benchmark(path, runs=runs, warmup=warmup)["latency_us_median"]
        runner = verify._interpreter(path, num_threads=1).get_signature_runner()
        (name, detail), = runner.get_input_details().items()
        x = pixels[None].astype(detail["dtype"]) if detail["dtype"] == np.uint8 \
            else (pixels[None] / 255).astype(np.float32)
        call_us = _median_us(lambda: runner(**{name: x}), runs, warmup)
        row[quantization] = {"mediapipe": mediapipe_us, "litert_invoke": invoke_us,
                             "litert_call": call_us}
    return row


def table(rows):
    lines = ["| model | file | MediaPipe classify (us) | LiteRT invoke (us) | "
             "LiteRT Python call (us) | MediaPipe / invoke |",
             "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        for q in MODES:
            r = row[q]
            lines.append(f"| {row['preset']} | {'float32' if q == 'none' else 'int8, uint8 in'}"
                         f" | {r['mediapipe']:.0f} | {r['litert_invoke']:.0f} | "
                         f"{r['litert_call']:.0f} | {r['mediapipe'] / r['litert_invoke']:.1f}x |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        parser.error(f"--runs must be >= 1 and --warmup >= 0, got {args.runs}, {args.warmup}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tempfile.TemporaryDirectory() as work:
        rows = [measure(p, work, args.runs, args.warmup) for p in args.models.split(",")]
    print(table(rows))
    with open("/proc/loadavg") as f:
        print(f"load average: {f.read().split()[:3]}")


if __name__ == "__main__":
    main()
