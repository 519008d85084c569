r"""DINO recipe on the bundled digits (offline, CPU, ~8 minutes).

    python -m experiments.recipes.dino --output_dir=/tmp/dino_digits

1. Pretrains ``dino_vit_tiny_digits`` on the 1,257 ``digits:train`` images
   *without their labels* (labels are replaced by zeros before the pipeline): 2 global
   32 px crops per image, cut from each 8x8 digit as it is stored (as
   ``DataAugmentationDINO`` crops the decoded image) and resized bicubically
   (``--model_overrides='{"num_local_crops": 2}'`` adds 24 px local ones),
   EMA teacher, centring, sharpening, stochastic depth 0.1 in the student.
   AdamW as ``main_dino.py``: linear warm-up then cosine to ``--min_learning_rate``
   (the cosine ends at the last step), weight decay 0.04 -> 0.4 on a cosine
   (DINO's ``weight_decay_end``), none on biases and norm scales
   (``utils.get_params_groups``).
2. Evaluates frozen features with the paper's weighted k-NN (k = 20, T = 0.07,
   cosine; neighbours from digits:train) and a linear probe, for: the DINO
   teacher backbone, the same backbone at random initialisation, and raw
   pixels. Every ``--knn_every`` epochs the teacher's k-NN accuracy on
   ``digits:validation`` is logged (a curve over epochs); at the end each
   feature set is scored on digits:validation and, once, on digits:test,
   and a curve over labelled-data size (k-NN with 1, 2, 5, 10, 25, 50 and
   all labelled training images per class, 3 draws each) is measured on
   digits:validation. Nothing is chosen on the test split.

Numbers and wall times go to stdout and ``results.json`` in ``--output_dir``;
the teacher backbone is saved as a preset in ``--output_dir/backbone``.
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

import keras_zoo
from keras_zoo import evaluation, hub
from keras_zoo.data import datasets
from keras_zoo.training import optimizers

flags.DEFINE_string("output_dir", "/tmp/dino_digits", "Where results.json and the "
                    "backbone preset go.")
flags.DEFINE_string("preset", "dino_vit_tiny_digits", "DINO preset to pretrain.")
flags.DEFINE_string("model_overrides", None, "JSON object of DINO config values changed "
                    "from the preset, e.g. '{\"num_local_crops\": 2}'.")
flags.DEFINE_integer("epochs", 150, "Pretraining epochs over the 1,257 training images.")
flags.DEFINE_integer("knn_every", 10, "Epochs between the teacher k-NN accuracies on "
                     "digits:validation (the curve over epochs); 0: none.")
flags.DEFINE_integer("batch_size", 64, "Images per batch (each gives 2 + N views).")
flags.DEFINE_float("learning_rate", 1e-3, "Peak AdamW learning rate (after the linear "
                   "warm-up, then cosine decay).")
flags.DEFINE_integer("warmup_epochs", 10, "Epochs of linear learning-rate warm-up (the "
                     "paper's 10). Much shorter and the head collapses to a uniform output "
                     "(loss stuck at ln(out_dim)) before the centre has caught up.")
flags.DEFINE_float("min_learning_rate", 1e-6, "Learning rate at the end of the cosine "
                   "(main_dino.py's --min_lr).")
flags.DEFINE_float("weight_decay", 0.04, "AdamW weight decay at the start (the paper's 0.04; "
                   "the model's weight_decay_end, 0.4, is where its cosine ends).")
flags.DEFINE_integer("seed", 0, "Seed of weights, crops and data order.")
flags.DEFINE_boolean("jit_compile", True, "Compile the train step with XLA.")
FLAGS = flags.FLAGS


def knn_and_probe(name, features, y):
    """k-NN and linear probe of one feature set (``features``/``y``: dicts by split),
    scored on validation and on test."""
    start = time.time()
    row = {"feature_dim": int(features["train"].shape[1])}
    for split in ("validation", "test"):
        row[split] = {
            "knn_top1": evaluation.knn_accuracy(features["train"], y["train"], features[split],
                                                y[split], k=20, temperature=0.07),
            "linear_probe_top1": evaluation.linear_probe(
                features["train"], y["train"], features[split], y[split], epochs=100,
                seed=FLAGS.seed)}
    print(f"  {name:<28s} dim {row['feature_dim']:5d}   validation k-NN "
          f"{row['validation']['knn_top1']:6.2%} probe {row['validation']['linear_probe_top1']:6.2%}"
          f"   test k-NN {row['test']['knn_top1']:6.2%} probe "
          f"{row['test']['linear_probe_top1']:6.2%}   ({time.time() - start:.1f} s)")
    return row


LABELLED_PER_CLASS = (1, 2, 5, 10, 25, 50, None)  # None: every training image


def labelled_size_curve(features, y, draws=3):
    """k-NN accuracy on validation when only n labelled training images per class
    are neighbours (3 seeded draws, mean): does the representation help when
    labels are few?"""
    curve = {}
    for n in LABELLED_PER_CLASS:
        scores = []
        for draw in range(draws if n else 1):
            if n:
                rng = np.random.default_rng(draw)
                keep = np.concatenate([rng.permutation(np.flatnonzero(y["train"] == c))[:n]
                                       for c in np.unique(y["train"])])
            else:
                keep = np.arange(len(y["train"]))
            scores.append(evaluation.knn_accuracy(
                features["train"][keep], y["train"][keep], features["validation"],
                y["validation"], k=min(20, len(keep)), temperature=0.07))
        curve["all" if n is None else str(n)] = float(np.mean(scores))
    return curve


class KnnCurve(keras.callbacks.Callback):
    """Teacher k-NN accuracy (train -> validation) every ``every`` epochs."""

    def __init__(self, every, x, y):
        super().__init__()
        self.every, self.x, self.y, self.curve = every, x, y, {}

    def on_epoch_end(self, epoch, logs=None):
        if self.every and (epoch + 1) % self.every == 0:
            f = {s: evaluation.extract_features(self.model.teacher_backbone, self.x[s])
                 for s in ("train", "validation")}
            self.curve[epoch + 1] = evaluation.knn_accuracy(
                f["train"], self.y["train"], f["validation"], self.y["validation"], k=20,
                temperature=0.07)
            print(f"  epoch {epoch + 1}: teacher k-NN on digits:validation "
                  f"{self.curve[epoch + 1]:.2%}", flush=True)


def main(argv):
    del argv
    keras.utils.set_random_seed(FLAGS.seed)
    load_start = os.getloadavg()[0]
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    t0 = time.time()
    x, y = {}, {}
    for split in ("train", "validation", "test"):
        x[split], y[split], _ = datasets.load_arrays(f"digits:{split}", split, 32, 1)
    x_train = x["train"]
    originals, _ = datasets.load("digits:train")  # 8x8, as stored: crops start here
    steps_per_epoch = len(x_train) // FLAGS.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"--batch_size={FLAGS.batch_size} is larger than the "
                         f"{len(x_train)} training images: no full batch")
    total_steps = FLAGS.epochs * steps_per_epoch
    overrides = json.loads(FLAGS.model_overrides) if FLAGS.model_overrides else {}
    # pretraining starts from random weights, even for a name with published ones
    fresh = hub.published_source(FLAGS.preset) is not None
    model = keras_zoo.DINO.from_preset(FLAGS.preset, load_weights=not fresh,
                                       steps_per_epoch=steps_per_epoch,
                                       total_steps=total_steps, **overrides)
    random_backbone = keras_zoo.DINO.from_preset(FLAGS.preset,
                                                 load_weights=not fresh).teacher_backbone
    print(f"DINO {FLAGS.preset}: student {model.trainable_parameter_count():,} trainable "
          f"parameters; {FLAGS.epochs} epochs x {steps_per_epoch} steps of "
          f"{FLAGS.batch_size} images")

    warmup = max(1, min(FLAGS.warmup_epochs * steps_per_epoch, total_steps - 1))
    # Keras' decay_steps count from the end of the warm-up: the cosine reaches
    # its floor at the last step, as utils.cosine_scheduler's does.
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, total_steps - warmup, alpha=FLAGS.min_learning_rate / FLAGS.learning_rate,
        warmup_target=FLAGS.learning_rate, warmup_steps=warmup)
    optimizer = optimizers.AdamW(schedule, weight_decay=FLAGS.weight_decay)
    # utils.get_params_groups: biases and norm scales (1-D) are not regularized.
    optimizer.exclude_from_weight_decay(
        var_list=[v for v in model.trainable_variables if len(v.shape) <= 1])
    model.compile(optimizer=optimizer, jit_compile=FLAGS.jit_compile,
                  **model.compile_defaults())
    # DINO never sees the digits' labels.
    ds = (originals.map(lambda image, _: (image, tf.constant(0, tf.int32)))
          .shuffle(len(x_train), seed=FLAGS.seed)
          .map(model.multicrop(seed=FLAGS.seed), num_parallel_calls=tf.data.AUTOTUNE)
          .batch(FLAGS.batch_size, drop_remainder=True)
          .prefetch(tf.data.AUTOTUNE))
    start = time.time()
    curve = KnnCurve(FLAGS.knn_every, x, y)
    history = model.fit(ds, epochs=FLAGS.epochs, verbose=2, callbacks=[curve])
    train_seconds = time.time() - start
    losses = history.history["loss"]
    print(f"pretraining: loss {losses[0]:.3f} -> {losses[-1]:.3f} in {train_seconds:.0f} s "
          f"({1000 * train_seconds / total_steps:.0f} ms/step incl. XLA compile)")

    print("frozen features (k-NN k=20 T=0.07 and linear probe 100 epochs, fit on "
          "digits:train; scored on digits:validation and digits:test):")
    results, size_curves = {}, {}
    for name, extract in [
        ("DINO teacher backbone", model.teacher_backbone),
        ("DINO student backbone", model.student_backbone),
        ("same ViT, random init", random_backbone),
        ("raw pixels (32x32)", lambda images: np.reshape(images, (len(images), -1))),
    ]:
        features = {s: evaluation.extract_features(extract, x[s]) for s in x}
        results[name] = knn_and_probe(name, features, y)
        size_curves[name] = labelled_size_curve(features, y)
        print(f"    k-NN on validation vs labelled images per class: {size_curves[name]}")
    model.teacher_backbone.save_to_preset(os.path.join(FLAGS.output_dir, "backbone"),
                                          description="DINO teacher backbone, digits")
    summary = {"preset": FLAGS.preset, "model_overrides": overrides, "epochs": FLAGS.epochs, "batch_size": FLAGS.batch_size,
               "steps": total_steps, "loss_first_epoch": losses[0],
               "loss_last_epoch": losses[-1], "pretrain_seconds": train_seconds,
               "wall_seconds": time.time() - t0,
               "train_dataset": {"spec": "digits:train", "examples": len(x["train"]),
                                 "labels_used": "k-NN neighbours and probe only"},
               "validation_dataset": {"spec": "digits:validation",
                                      "examples": len(x["validation"])},
               "test_dataset": {"spec": "digits:test", "examples": len(x["test"])},
               "load_average_start_end": [load_start, os.getloadavg()[0]],
               "features": results,
               "teacher_knn_validation_by_epoch": curve.curve,
               "knn_validation_by_labelled_per_class": size_curves}
    with open(os.path.join(FLAGS.output_dir, "results.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"wall time {summary['wall_seconds']:.0f} s; results in "
          f"{os.path.join(FLAGS.output_dir, 'results.json')}")


if __name__ == "__main__":
    app.run(main)
