r"""DINO recipe on the bundled digits (offline, CPU, ~8 minutes).

    python -m experiments.recipes.dino --output_dir=/tmp/dino_digits

1. Pretrains ``dino_vit_tiny_digits`` on the 1,437 training images *without
   their labels* (labels are replaced by zeros before the pipeline): 2 global
   32 px crops per image, cut from each 8x8 digit as it is stored (as
   ``DataAugmentationDINO`` crops the decoded image) and resized bicubically
   (``--model_overrides='{"num_local_crops": 2}'`` adds 24 px local ones),
   EMA teacher, centring, sharpening, stochastic depth 0.1 in the student.
   AdamW as ``main_dino.py``: linear warm-up then cosine to ``--min_learning_rate``
   (the cosine ends at the last step), weight decay 0.04 -> 0.4 on a cosine
   (DINO's ``weight_decay_end``), none on biases and norm scales
   (``utils.get_params_groups``).
2. Evaluates frozen features on ``digits:test`` with the paper's weighted
   k-NN (k = 20, T = 0.07, cosine) and a linear probe, for: the DINO teacher
   backbone, the same backbone at random initialisation, and raw pixels.

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
flags.DEFINE_integer("epochs", 150, "Pretraining epochs over the 1,437 training images.")
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


def knn_and_probe(name, train_features, y_train, test_features, y_test):
    start = time.time()
    knn = evaluation.knn_accuracy(train_features, y_train, test_features, y_test,
                                  k=20, temperature=0.07)
    probe = evaluation.linear_probe(train_features, y_train, test_features, y_test,
                                    epochs=100, seed=FLAGS.seed)
    print(f"  {name:<28s} dim {train_features.shape[1]:5d}   k-NN {knn:6.2%}   "
          f"linear probe {probe:6.2%}   ({time.time() - start:.1f} s)")
    return {"knn_top1": knn, "linear_probe_top1": probe, "feature_dim": train_features.shape[1]}


def main(argv):
    del argv
    keras.utils.set_random_seed(FLAGS.seed)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    t0 = time.time()
    x_train, y_train, _ = datasets.load_arrays("digits", "train", 32, 1)
    x_test, y_test, _ = datasets.load_arrays("digits", "test", 32, 1)
    originals, _ = datasets.load("digits", "train")  # 8x8, as stored: crops start here
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
    history = model.fit(ds, epochs=FLAGS.epochs, verbose=2)
    train_seconds = time.time() - start
    losses = history.history["loss"]
    print(f"pretraining: loss {losses[0]:.3f} -> {losses[-1]:.3f} in {train_seconds:.0f} s "
          f"({1000 * train_seconds / total_steps:.0f} ms/step incl. XLA compile)")

    print("frozen features on digits:test (k-NN k=20 T=0.07; linear probe 100 epochs):")
    results = {}
    for name, extract in [
        ("DINO teacher backbone", model.teacher_backbone),
        ("DINO student backbone", model.student_backbone),
        ("same ViT, random init", random_backbone),
        ("raw pixels (32x32)", lambda x: np.reshape(x, (len(x), -1))),
    ]:
        results[name] = knn_and_probe(name, evaluation.extract_features(extract, x_train),
                                      y_train, evaluation.extract_features(extract, x_test),
                                      y_test)
    model.teacher_backbone.save_to_preset(os.path.join(FLAGS.output_dir, "backbone"),
                                          description="DINO teacher backbone, digits")
    summary = {"preset": FLAGS.preset, "model_overrides": overrides, "epochs": FLAGS.epochs, "batch_size": FLAGS.batch_size,
               "steps": total_steps, "loss_first_epoch": losses[0],
               "loss_last_epoch": losses[-1], "pretrain_seconds": train_seconds,
               "wall_seconds": time.time() - t0, "features": results}
    with open(os.path.join(FLAGS.output_dir, "results.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"wall time {summary['wall_seconds']:.0f} s; results in "
          f"{os.path.join(FLAGS.output_dir, 'results.json')}")


if __name__ == "__main__":
    app.run(main)
