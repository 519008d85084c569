r"""The main job: train small models on the bundled digits, export each to
full-int8 TFLite, and print Keras vs TFLite accuracy on the test split.

    python -m experiments.demo                       # ViT and LeNet, ~2 min on 2 CPU cores
    python -m experiments.demo --configs=experiments/configs/digits_resnet.py

Each config trains through ``experiments.train`` (the same code as the
flag-driven trainer, checkpoints and presets in ``--work_dir/<preset>``) on
digits:train (1,257 images); ``best/`` is chosen on digits:validation (180
images, held out of the training images), and the test split is touched once,
at the end: ``export.export`` writes a float32 and a full-int8 TFLite file of
best/ (calibrated on digits:train) and runs Keras and both files on all 360
digits:test images. Runs resume: re-running skips finished training. The
table also goes to ``--work_dir/results.json`` (with ``validation_dataset``
and ``test_dataset``), a results file (keras_zoo/results.py); the documentation's
table is ``--results_file=docs/results/demo.json``.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags, logging

flags.DEFINE_list("configs", ["experiments/configs/digits_vit.py",
                              "experiments/configs/digits_lenet.py"],
                  "Training config files (experiments/configs/*.py), one model each.")
flags.DEFINE_string("work_dir", "runs/demo", "Where runs, presets and .tflite files go.")
flags.DEFINE_integer("calibration_samples", 200, "digits:train images calibrating int8.")
flags.DEFINE_string("results_file", None, "Also write the results file here (the "
                    "documentation's is docs/results/demo.json).")
FLAGS = flags.FLAGS

TEST_IMAGES = 360  # the whole digits:test split
TEST_SPEC = "digits:test"


def demo(config_paths, work_dir, calibration_samples=200):
    """Returns one row of results per config."""
    from experiments import train as trainer
    from export import export

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rows = []
    for path in config_paths:
        path = path if os.path.isabs(path) or os.path.exists(path) else os.path.join(here, path)
        config = trainer.load_config_file(path)
        run_dir = os.path.join(work_dir, config["preset"])
        # best/ is chosen on the validation split; the test split is scored once, below
        # (the trainer's own test pass is skipped: it would score the same weights).
        result = trainer.train({**config, "model_dir": run_dir, "test_dataset": "none"})
        model = export.load_model(model_dir=run_dir)
        row = {"preset": config["preset"], "params": model.trainable_parameter_count(),
               "train_seconds": result["wall_seconds"],
               "train_dataset": result["train_dataset"],
               "validation_dataset": result["validation_dataset"],
               "test_dataset": {"spec": TEST_SPEC, "examples": TEST_IMAGES},
               "best": result.get("best")}
        for quantization in ("none", "int8"):
            out = os.path.join(run_dir, f"{config['preset']}_{quantization}.tflite")
            info = export.export_model(
                model, out, "tflite", quantization,
                representative_data="digits:train" if quantization == "int8" else None,
                calibration_samples=calibration_samples,
                signature="serving_default")  # the classifier alone: no "embedding" subgraph
            check = next(iter(export.verify_export(model, info, TEST_SPEC,
                                                   TEST_IMAGES).values()))
            row[quantization] = {"path": out, "bytes": os.path.getsize(out), **check}
        rows.append(row)
    return rows


COLUMNS = ["model", "params", "train s", "best epoch", "validation acc", "Keras acc",
           "TFLite f32 acc", "TFLite int8 acc", "int8 top-1 agreement", "f32 KB", "int8 KB"]


def table_rows(rows):
    """The main job's table, one list of plain numbers per model (COLUMNS)."""
    out = []
    for r in rows:
        f32, i8, best = r["none"], r["int8"], r.get("best") or {}
        out.append([r["preset"], r["params"], round(r["train_seconds"]), best.get("epoch"),
                    best.get("value"), i8["keras_accuracy"], f32["exported_accuracy"],
                    i8["exported_accuracy"], i8["top1_agreement"],
                    round(f32["bytes"] / 1024), round(i8["bytes"] / 1024)])
    return out


def _table(rows):
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1)]
    for cells in table_rows(rows):
        lines.append("| " + " | ".join(f"{c:.4f}" if isinstance(c, float) else
                                       f"{c:,}" if isinstance(c, int) else str(c)
                                       for c in cells) + " |")
    return "\n".join(lines)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # TF's SavedModel INFO lines drown the table
    load = os.getloadavg()[0]
    rows = demo(FLAGS.configs, FLAGS.work_dir, FLAGS.calibration_samples)
    print("\nKeras vs TFLite on digits:test (360 images; LiteRT interpreter); best/ chosen "
          "on digits:validation (180 images):\n")
    print(_table(rows))
    from keras_zoo import results

    command = "python -m experiments.demo " + " ".join(sys.argv[1:])
    for path in filter(None, [os.path.join(FLAGS.work_dir, "results.json"),
                              FLAGS.results_file]):
        results.write_results("demo", command.strip(), {"main": (COLUMNS, table_rows(rows))},
                              path=path, load_average_at_start=round(load, 2), rows=rows)
        print(f"\nresults in {path}")
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    sys.exit(run())
