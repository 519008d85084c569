r"""MAE recipe on the bundled digits (offline, CPU, a few minutes).

    python -m experiments.recipes.mae --output_dir=/tmp/mae_digits

1. Pretrains ``mae_tiny_digits`` without labels (75 % of the 4x4 patches of
   each 32x32 image hidden), printing the masked-patch loss on the test split
   before and after, next to two reference predictors: the mean training image,
   and each masked patch filled with the mean of the visible ones. Training
   images go through MAE's ``transform_train``: a random-resized crop of 20-100 %
   of each 8x8 digit as stored, resized bicubically to 32, and a horizontal flip
   (``MAE.train_input_transform``). AdamW (beta2 0.95) as ``main_pretrain.py``:
   no weight decay on biases and norm scales, the cosine ending at the last step.
2. Writes ``reconstructions.png``: original / masked input / reconstruction.
3. Fine-tunes: ``mae.to_vit(num_classes=10)`` against the same ViT from random
   initialisation, same epochs and optimizer; prints digits test accuracy.

Numbers go to stdout and ``results.json`` in ``--output_dir``.
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
from keras_zoo import hub
from keras_zoo.data import datasets
from keras_zoo.models.mae import masked_patch_loss, patchify
from keras_zoo.training import optimizers

flags.DEFINE_string("output_dir", "/tmp/mae_digits", "Where the PNG and results.json go.")
flags.DEFINE_string("preset", "mae_tiny_digits", "MAE preset to pretrain.")
flags.DEFINE_integer("epochs", 100, "Pretraining epochs over the 1,437 training images.")
flags.DEFINE_integer("finetune_epochs", 30, "Epochs of fine-tuning (and of the scratch ViT).")
flags.DEFINE_integer("batch_size", 64, "Batch size of every stage.")
flags.DEFINE_float("learning_rate", 1e-3, "Peak AdamW learning rate (after 5 %% warmup, "
                   "cosine decay).")
flags.DEFINE_float("weight_decay", 0.05, "AdamW weight decay (the paper's 0.05).")
flags.DEFINE_integer("loss_repeats", 8, "Random masks drawn per test image when measuring "
                     "the masked-patch loss.")
flags.DEFINE_integer("seed", 0, "Seed of weights, masks and data order.")
FLAGS = flags.FLAGS


def _optimizer(steps, model):
    warmup = max(1, steps // 20)
    # decay_steps count from the end of the warm-up, so the cosine reaches 0
    # at the last step (MAE's lr_sched.adjust_learning_rate, min_lr 0).
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, steps - warmup, warmup_target=FLAGS.learning_rate, warmup_steps=warmup)
    # beta_2 = 0.95 as in MAE's pretraining recipe.
    optimizer = optimizers.AdamW(schedule, weight_decay=FLAGS.weight_decay, beta_2=0.95)
    # "following timm: set wd as 0 for bias and norm layers" (main_pretrain.py).
    optimizer.exclude_from_weight_decay(
        var_list=[v for v in model.trainable_variables if len(v.shape) <= 1])
    return optimizer


def masked_loss(model, images):
    """Masked-patch loss of ``model`` and of two reference predictors, averaged
    over ``loss_repeats`` random masks per image."""
    target = np.asarray(patchify(images, model.patch_size))
    mean_image = patchify(np.mean(images, axis=0, keepdims=True), model.patch_size)
    totals = np.zeros(3)
    for _ in range(FLAGS.loss_repeats):
        out = model.predict(images, batch_size=256, verbose=0)
        mask = out["mask"]
        visible = (1 - mask)[..., None]
        visible_mean = (np.sum(target * visible, axis=(1, 2), keepdims=True) /
                        (visible.sum(axis=1, keepdims=True) * target.shape[-1]))
        for i, pred in enumerate((out["reconstruction"],
                                  np.broadcast_to(mean_image, target.shape),
                                  np.broadcast_to(visible_mean, target.shape))):
            totals[i] += float(masked_patch_loss(target, pred, mask, model.norm_pix_loss))
    return totals / FLAGS.loss_repeats


def write_png(model, images, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reconstructed, masked, mask = model.reconstruct(images)
    # Masked patches shown grey so they stand apart from black background.
    masked = np.where(mask > 0, 0.5, masked)
    ratio = model.get_zoo_config()["mask_ratio"]
    rows = (("original", images), (f"masked ({ratio:.0%})", masked),
            ("reconstruction", reconstructed))
    fig, axes = plt.subplots(3, len(images), figsize=(1.2 * len(images), 4))
    for r, (title, batch) in enumerate(rows):
        for c, image in enumerate(batch):
            axes[r, c].imshow(np.clip(image[..., 0], 0, 1), cmap="gray", vmin=0, vmax=1)
            axes[r, c].axis("off")
        axes[r, 0].set_title(title, fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def fine_tune(model, x, y, x_test, y_test):
    steps = FLAGS.finetune_epochs * (len(x) // FLAGS.batch_size)
    model.compile(optimizer=_optimizer(steps, model), jit_compile=True,
                  **model.compile_defaults())
    start = time.time()
    model.fit(x, y, batch_size=FLAGS.batch_size, epochs=FLAGS.finetune_epochs, shuffle=True,
              verbose=0)
    seconds = time.time() - start
    accuracy = model.evaluate(x_test, y_test, batch_size=120, verbose=0, return_dict=True)
    return accuracy["accuracy"], seconds


def main(argv):
    del argv
    keras.utils.set_random_seed(FLAGS.seed)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    # pretraining starts from random weights, even for a name with published ones
    fresh = hub.published_source(FLAGS.preset) is not None
    mae = keras_zoo.MAE.from_preset(FLAGS.preset, load_weights=not fresh, seed=FLAGS.seed)
    config = mae.get_zoo_config()
    size, channels = config["image_size"], config["num_channels"]
    x, y, _ = datasets.load_arrays("digits", "train", size, channels)
    x_test, y_test, _ = datasets.load_arrays("digits", "test", size, channels)
    n_train = len(x) // FLAGS.batch_size * FLAGS.batch_size  # full batches: static shapes

    before = masked_loss(mae, x_test)
    print(f"masked-patch loss on digits:test before pretraining: {before[0]:.4f} "
          f"(mean training image: {before[1]:.4f}, mean of visible patches: {before[2]:.4f})")
    steps = FLAGS.epochs * (n_train // FLAGS.batch_size)
    mae.compile(optimizer=_optimizer(steps, mae), jit_compile=True, **mae.compile_defaults())
    originals, _ = datasets.load("digits", "train")  # 8x8, as stored: crops start here
    train = (originals.shuffle(len(x), seed=FLAGS.seed)
             .map(mae.train_input_transform(FLAGS.seed), num_parallel_calls=tf.data.AUTOTUNE)
             .batch(FLAGS.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))
    start = time.time()
    history = mae.fit(train, epochs=FLAGS.epochs, verbose=0)
    pretrain_seconds = time.time() - start
    after = masked_loss(mae, x_test)
    print(f"masked-patch loss on digits:test after {FLAGS.epochs} epochs ({steps} steps, "
          f"{pretrain_seconds:.0f} s): {after[0]:.4f}; last training epoch "
          f"{history.history['loss'][-1]:.4f}")
    png = os.path.join(FLAGS.output_dir, "reconstructions.png")
    write_png(mae, x_test[:10], png)
    mae.save_to_preset(os.path.join(FLAGS.output_dir, "mae_preset"),
                       description="MAE pretrained on bundled digits by experiments.recipes.mae")

    keras.utils.set_random_seed(FLAGS.seed)
    pretrained = mae.to_vit(num_classes=10)
    scratch = keras_zoo.ViT(**pretrained.get_zoo_config())  # same architecture, random init
    pretrained_acc, pretrained_s = fine_tune(pretrained, x[:n_train], y[:n_train],
                                             x_test, y_test)
    scratch_acc, scratch_s = fine_tune(scratch, x[:n_train], y[:n_train], x_test, y_test)
    print(f"digits:test accuracy after {FLAGS.finetune_epochs} epochs: ViT from MAE "
          f"{pretrained_acc:.4f} ({pretrained_s:.0f} s), ViT from scratch {scratch_acc:.4f} "
          f"({scratch_s:.0f} s)")
    results = {
        "preset": FLAGS.preset, "epochs": FLAGS.epochs, "pretrain_steps": steps,
        "pretrain_seconds": round(pretrain_seconds, 1),
        "masked_loss_before": before[0], "masked_loss_after": after[0],
        "reference_mean_image": after[1], "reference_mean_visible": after[2],
        "finetune_epochs": FLAGS.finetune_epochs,
        "test_accuracy_from_mae": pretrained_acc, "test_accuracy_from_scratch": scratch_acc,
        "finetune_seconds": [round(pretrained_s, 1), round(scratch_s, 1)],
        "png": png,
    }
    with open(os.path.join(FLAGS.output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {png} and results.json")


if __name__ == "__main__":
    app.run(main)
