r"""Quantization-aware training on the bundled digits: float32 vs post-training
int8 vs QAT int8, as TFLite files, several seeds.

    nice -n 5 python -m experiments.recipes.qat --output_dir=/tmp/qat_digits
    nice -n 5 python -m experiments.recipes.qat --models=vit_tiny_digits --seeds=0 \
        --prune_sparsity=0.5

Offline, CPU. For each model and seed:

1. trains the float model with its config (experiments/configs/digits_*.py;
   LeNet as ``lenet5_relu``, the max-pool variant) -> ``<run>/float/best``;
2. exports it as float32 TFLite and as post-training int8 (the exporter's
   selective int8, calibrated on 200 digits:train images);
3. fine-tunes ``<run>/float/best`` with ``experiments.train --qat`` (the
   recipe's epochs and learning rate) -> ``<run>/qat/last`` (the last
   weights, not the best test epoch: no selection on the test set);
4. exports that with ``--quantization=int8`` and no representative data;
5. runs every file on all 360 digits:test images: accuracy, top-1 agreement
   with the float Keras model, the QAT file's agreement with its own Keras
   model, ops (int8 vs float), XNNPACK delegation, size.

``--prune_sparsity`` adds magnitude pruning to step 3 and reports the
exported file's zero fraction of int8 weights and its gzip size.
Runs already trained and evaluated in ``--output_dir`` are reused
(``<run>/result.json``), so tables can gather runs made one at a time.
Prints a Markdown table (and the load average) and writes ``results.json``.
"""

import gzip
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from absl import app, flags

from experiments import train as trainer  # also defines --prune_sparsity, used here

flags.DEFINE_string("output_dir", "/tmp/qat_digits", "Runs, TFLite files and results.json.")
flags.DEFINE_list("models", ["lenet5_relu", "resnet_tiny_digits", "vit_tiny_digits"],
                  "Presets to compare (keys of RECIPES).")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of float training and fine-tuning.")
flags.DEFINE_integer("benchmark_runs", 100, "LiteRT runs per file for latency/delegation.")
FLAGS = flags.FLAGS

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
# Float training: the project's digits configs. QAT, one rule for all three: a
# third of the float epochs at a tenth of the float peak learning rate, no
# warmup, the float config's weight decay, distilling the float model's
# predictions (QAT option distill=true) rather than fitting the labels again.
QAT_CONFIG = {"distill": True}
RECIPES = {
    "lenet5_relu": {"config": "digits_lenet.py", "qat_epochs": 10, "qat_learning_rate": 3e-4},
    "resnet_tiny_digits": {"config": "digits_resnet.py", "qat_epochs": 7,
                           "qat_learning_rate": 3e-4},
    "vit_tiny_digits": {"config": "digits_vit.py", "qat_epochs": 20,
                        "qat_learning_rate": 1e-4},
}


def _train(config):
    done = os.path.join(config["model_dir"], "metrics.json")
    if not os.path.exists(done):
        trainer.train(config)


def run_one(name, seed, out):
    recipe = RECIPES[name]
    base = trainer.load_config_file(os.path.join(CONFIGS, recipe["config"]))
    # best/ on digits:validation (the trainer's default); the test split is scored
    # once, by evaluate() below, not by the trainer too
    base.update(preset=name, seed=seed, test_dataset="none")
    run = os.path.join(out, name, f"seed{seed}")
    suffix = f"_prune{FLAGS.prune_sparsity:g}" if FLAGS.prune_sparsity else ""
    done = os.path.join(run, f"result{suffix}.json")
    if os.path.exists(done):  # evaluated before: reuse, so tables can gather runs
        with open(done) as f:
            return json.load(f)
    _train({**base, "model_dir": f"{run}/float"})
    qat = {**base, "preset": f"{run}/float/best", "qat": True, "qat_config": QAT_CONFIG,
           "epochs": recipe["qat_epochs"],
           "learning_rate": recipe["qat_learning_rate"], "warmup_steps": 0,
           "model_dir": f"{run}/qat"}
    if FLAGS.prune_sparsity:
        qat.update(prune_sparsity=FLAGS.prune_sparsity,
                   model_dir=f"{run}/qat_prune{FLAGS.prune_sparsity:g}")
    _train(qat)
    result = evaluate(f"{run}/float/best", f"{qat['model_dir']}/last", run)
    unpruned = f"{run}/qat/qat_int8.tflite"
    if FLAGS.prune_sparsity and os.path.exists(unpruned):
        with open(unpruned, "rb") as f:
            content = f.read()
        result["unpruned_qat_int8"] = {"size_bytes": len(content),
                                       "gzip_bytes": len(gzip.compress(content, 9))}
    with open(done, "w") as f:
        json.dump(result, f, indent=2)
    return result


def evaluate(float_preset, qat_preset, run):
    import keras_zoo
    from export import export_tflite, tflite, verify
    from keras_zoo.data import datasets

    x, y, _ = datasets.load_arrays("digits", "test", 32, 1)
    float_model = keras_zoo.from_preset(float_preset)
    qat_model = keras_zoo.from_preset(qat_preset)
    files = {"float32": f"{run}/float32.tflite", "ptq_int8": f"{run}/ptq_int8.tflite",
             "qat_int8": f"{qat_preset}/../qat_int8.tflite"}
    # The classifiers' own signature only (not the embedding one), for all three.
    export_tflite(float_model, {"none": files["float32"], "int8": files["ptq_int8"]},
                  signature="serving_default", representative_data="digits:train")
    export_tflite(qat_model, {"int8": files["qat_int8"]}, signature="serving_default")
    reference = float_model.predict(x, batch_size=120, verbose=0).argmax(1)
    qat_keras = qat_model.predict(x, batch_size=120, verbose=0).argmax(1)
    result = {"float_keras_accuracy": float(np.mean(reference == y)),
              "qat_keras_accuracy": float(np.mean(qat_keras == y))}
    for key, path in files.items():
        logits = next(iter(verify.tflite_outputs(path, "serving_default", {"images": x})
                           .values()))
        predicted = logits.argmax(1)
        with open(path, "rb") as f:
            content = f.read()
        bench = verify.benchmark(path, runs=FLAGS.benchmark_runs)
        result[key] = {
            "accuracy": float(np.mean(predicted == y)),
            "agreement_with_float": float(np.mean(predicted == reference)),
            "size_bytes": len(content), "gzip_bytes": len(gzip.compress(content, 9)),
            "ops": tflite.op_precisions(content),
            "fully_delegated": bench["fully_delegated"],
            "xnnpack_partitions": bench["xnnpack_partitions"],
            "undelegated_ops": bench["undelegated_ops"],
            "latency_us_median": bench["latency_us_median"],
            **tflite.weight_sparsity(content),
        }
        if key == "qat_int8":
            result[key]["agreement_with_qat_keras"] = float(np.mean(predicted == qat_keras))
    return result


def _pct(values):
    mean = 100 * statistics.mean(values)
    spread = " / ".join(f"{100 * v:.1f}" for v in values)
    return f"{mean:.1f} ({spread})"


def _column(rows, key, field):
    return _pct([r[key][field] for r in rows])


def _delegated(rows, key):
    if all(r[key]["fully_delegated"] for r in rows):
        return "whole graph"
    ops = sorted({op for r in rows for op in r[key]["undelegated_ops"] or []})
    return "not: " + ", ".join(ops)


def table(results):
    lines = [("| model | float32 TFLite acc. | PTQ int8 acc. | QAT int8 acc. | PTQ agree w/ "
              "float | QAT agree w/ float | QAT file = QAT Keras | XNNPACK (PTQ / QAT) |"),
             "|---|---|---|---|---|---|---|---|"]
    for name, seeds in results.items():
        rows = list(seeds.values())
        lines.append(
            f"| {name} | {_column(rows, 'float32', 'accuracy')} | "
            f"{_column(rows, 'ptq_int8', 'accuracy')} | {_column(rows, 'qat_int8', 'accuracy')} | "
            f"{_column(rows, 'ptq_int8', 'agreement_with_float')} | "
            f"{_column(rows, 'qat_int8', 'agreement_with_float')} | "
            f"{_column(rows, 'qat_int8', 'agreement_with_qat_keras')} | "
            f"{_delegated(rows, 'ptq_int8')} / {_delegated(rows, 'qat_int8')} |")
    return "\n".join(lines)


def _ops(ops, kind):
    return ", ".join(f"{op} x{c[kind]}" for op, c in ops.items() if c.get(kind)) or "-"


def ops_table(results):
    lines = ["| model | file | ops (int8) | ops (float32) | size KB | gzip KB | zero weights |",
             "|---|---|---|---|---:|---:|---:|"]
    for name, seeds in results.items():
        r = next(iter(seeds.values()))
        for key in ("ptq_int8", "qat_int8"):
            ops = r[key]["ops"]
            lines.append(f"| {name} | {key} | {_ops(ops, 'int8')} | {_ops(ops, 'float32')} | "
                         f"{r[key]['size_bytes'] / 1024:.0f} | {r[key]['gzip_bytes'] / 1024:.0f}"
                         f" | {100 * r[key]['zero_fraction']:.1f} % |")
    return "\n".join(lines)


def prune_table(results):
    lines = [("| model | pruned QAT int8 acc. | agree w/ float | zero int8 kernel weights | "
              "size KB | gzip KB | unpruned QAT gzip KB |"), "|---|---|---|---:|---:|---:|---:|"]
    for name, seeds in results.items():
        rows = list(seeds.values())
        q = [r["qat_int8"] for r in rows]
        unpruned = [r["unpruned_qat_int8"]["gzip_bytes"] / 1024 for r in rows
                    if "unpruned_qat_int8" in r]
        lines.append(
            f"| {name} | {_column(rows, 'qat_int8', 'accuracy')} | "
            f"{_column(rows, 'qat_int8', 'agreement_with_float')} | "
            f"{100 * statistics.mean(x['zero_fraction'] for x in q):.1f} % | "
            f"{statistics.mean(x['size_bytes'] for x in q) / 1024:.0f} | "
            f"{statistics.mean(x['gzip_bytes'] for x in q) / 1024:.0f} | "
            f"{f'{statistics.mean(unpruned):.0f}' if unpruned else '-'} |")
    return "\n".join(lines)


def main(argv):
    del argv
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    started, load_before = time.time(), os.getloadavg()
    results = {}
    for name in FLAGS.models:
        if name not in RECIPES:
            raise SystemExit(f"unknown model {name!r}; recipes: {sorted(RECIPES)}")
        results[name] = {int(s): run_one(name, int(s), FLAGS.output_dir) for s in FLAGS.seeds}
    load_after = os.getloadavg()
    summary = {"results": results, "load_average_start": load_before,
               "load_average_end": load_after, "wall_seconds": time.time() - started,
               "prune_sparsity": FLAGS.prune_sparsity,
               "recipes": {k: RECIPES[k] for k in FLAGS.models}}
    suffix = f"_prune{FLAGS.prune_sparsity:g}" if FLAGS.prune_sparsity else ""
    with open(os.path.join(FLAGS.output_dir, f"results{suffix}.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(table(results))
    print()
    print(prune_table(results) if FLAGS.prune_sparsity else ops_table(results))
    print(f"\nseeds {', '.join(FLAGS.seeds)}; accuracy on the 360 digits:test images, mean "
          f"(per seed); load average {load_before[0]:.1f} at start, {load_after[0]:.1f} at end; "
          f"{summary['wall_seconds'] / 60:.0f} min")


if __name__ == "__main__":
    app.run(main)
