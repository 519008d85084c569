r"""Autoencoders, sparse autoencoder, VAE and classifiers on frozen codes, on the bundled digits.

    python -m experiments.recipes.autoencoders --output_dir=/tmp/autoencoders_digits

Offline, CPU, a few minutes. Images: the 1,437 / 360 bundled digits resized to 32x32x1.

1. Trains ``autoencoder_digits`` (dense, code 32), ``conv_autoencoder_digits``
   (code 32) and ``sparse_autoencoder_digits`` (256 sigmoid units, rho 0.05)
   and prints each one's reconstruction error on digits:test (summed
   cross-entropy per image and mean squared error per pixel) next to PCA with
   the same code size (the best linear autoencoder) and the mean image. Then
   Ng's exercise, ``sparse_autoencoder_ng`` (25 sigmoid units, rho 0.01,
   beta 3, lambda 1e-4, 1/2 squared error), on the digits at their native
   8x8: its terms of J and mean activation on digits:test.
2. Trains ``vae_digits`` (latent 16) and prints its ELBO on digits:test (nats
   per image, one-sample estimates averaged over ``--elbo_samples`` draws),
   and ``vae_digits_2d`` (latent 2) for the latent-space grid.
3. Classifiers on frozen codes: the same head (one hidden layer of
   ``--head_units``) on the frozen VAE means, on the frozen AE codes, and on
   raw pixels; digits:test accuracy, mean and spread over ``--classifier_seeds``.
4. PNGs: reconstructions.png, vae_latent_grid.png (decoded 2-D latent grid at
   Gaussian quantiles), vae_latent_scatter.png (test means by class),
   vae_interpolations.png, vae_samples.png.

Numbers go to stdout and ``results.json`` in ``--output_dir``; trained models
are saved as presets there (``vae_preset/`` etc.), loadable with
``keras_zoo.from_preset(folder)``.
"""

import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
from absl import app, flags

import keras_zoo
from keras_zoo.data import datasets
from keras_zoo.training import optimizers

flags.DEFINE_string("output_dir", "/tmp/autoencoders_digits", "Where PNGs, presets and "
                    "results.json go.")
flags.DEFINE_integer("epochs", 40, "Epochs of each autoencoder / VAE.")
flags.DEFINE_integer("classifier_epochs", 40, "Epochs of each classifier head.")
flags.DEFINE_integer("classifier_seeds", 3, "Seeds per classifier (accuracy mean and spread).")
flags.DEFINE_integer("head_units", 64, "Hidden units of every classifier head.")
flags.DEFINE_integer("batch_size", 64, "Batch size of every stage.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate (cosine decay to 0).")
flags.DEFINE_integer("elbo_samples", 10, "Draws of z per test image for the ELBO estimate.")
flags.DEFINE_integer("seed", 0, "Seed of weights and data order.")
FLAGS = flags.FLAGS


def _optimizer(steps):
    return optimizers.Adam(keras.optimizers.schedules.CosineDecay(
        FLAGS.learning_rate, steps))


def train(model, x, y, epochs):
    """Fits on full batches only (static shapes); returns wall seconds."""
    if len(x) < FLAGS.batch_size:
        raise datasets.DatasetError(
            f"{len(x)} training images do not fill one batch of {FLAGS.batch_size}")
    steps = epochs * (len(x) // FLAGS.batch_size)
    model.compile(optimizer=_optimizer(steps), jit_compile=True, **model.compile_defaults())
    start = time.time()
    model.fit(x, y, batch_size=FLAGS.batch_size, epochs=epochs, shuffle=True, verbose=0)
    return time.time() - start


def pixel_errors(reconstructions, x):
    p = np.clip(np.asarray(reconstructions, "float64"), 1e-7, 1 - 1e-7)
    bce = -np.mean(np.sum(x * np.log(p) + (1 - x) * np.log(1 - p), axis=(1, 2, 3)))
    return {"bce_per_image": float(bce), "mse_per_pixel": float(np.mean((p - x) ** 2))}


def pca_reconstruction(x_train, x_test, k):
    flat = x_train.reshape(len(x_train), -1)
    mean = flat.mean(axis=0)
    _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
    basis = vt[:k]
    test = x_test.reshape(len(x_test), -1) - mean
    return ((test @ basis.T) @ basis + mean).reshape(x_test.shape)


def classifier_accuracy(encoder, x, y, x_test, y_test):
    accuracies = []
    for seed in range(FLAGS.classifier_seeds):
        keras.utils.set_random_seed(FLAGS.seed + seed)
        model = keras_zoo.LatentClassifier(encoder=encoder, hidden_units=[FLAGS.head_units])
        seconds = train(model, x, y, FLAGS.classifier_epochs)
        logs = model.evaluate(x_test, y_test, batch_size=120, verbose=0, return_dict=True)
        accuracies.append(logs["accuracy"])
    return {"mean": statistics.mean(accuracies), "std": statistics.pstdev(accuracies),
            "runs": accuracies, "seconds_per_run": round(seconds, 1)}


# ---------------------------------------------------------------- pictures

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _grid(images, rows, cols, path, titles=None, scale=0.8):
    plt = _pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(scale * cols + (1.2 if titles else 0),
                                                   scale * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.imshow(np.asarray(images[i])[..., 0], cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
    for r, title in enumerate(titles or []):
        axes[r, 0].set_ylabel(title, fontsize=8, rotation=0, ha="right", va="center")
    fig.tight_layout(pad=0.1)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def latent_grid(vae2d, path, n=15):
    # Gaussian quantiles, as Kingma & Welling's figure 4: equal prior mass per cell.
    normal = statistics.NormalDist()
    values = [normal.inv_cdf(q) for q in np.linspace(0.05, 0.95, n)]
    z = np.array([[a, b] for b in reversed(values) for a in values], "float32")
    _grid(np.asarray(vae2d.decode(z)), n, n, path, scale=0.5)


def latent_scatter(vae2d, x_test, y_test, path):
    plt = _pyplot()
    mu = np.asarray(vae2d.code(x_test))
    fig, ax = plt.subplots(figsize=(5, 4.5))
    points = ax.scatter(mu[:, 0], mu[:, 1], c=y_test, cmap="tab10", s=8)
    fig.colorbar(points, ax=ax, ticks=range(10))
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    ax.set_title("digits:test posterior means (2-D VAE)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv):
    del argv
    out = FLAGS.output_dir
    os.makedirs(out, exist_ok=True)
    x, y, _ = datasets.load_arrays("digits", "train", 32, 1)
    x_test, y_test, _ = datasets.load_arrays("digits", "test", 32, 1)
    n = len(x) // FLAGS.batch_size * FLAGS.batch_size  # full batches: static shapes
    x, y = x[:n], y[:n]
    results = {"train_images": n, "test_images": len(x_test), "epochs": FLAGS.epochs}
    total = time.time()

    # 1. Autoencoders.
    mean_image = np.broadcast_to(x.mean(axis=0), x_test.shape)
    # Grey pixels make the cross-entropy's floor (reached by a perfect
    # reconstruction) the summed pixel entropy, not 0.
    results["reference_perfect"] = pixel_errors(x_test, x_test)
    results["reference_mean_image"] = pixel_errors(mean_image, x_test)
    results["reference_pca_32"] = pixel_errors(
        np.clip(pca_reconstruction(x, x_test, 32), 0, 1), x_test)
    print(f"digits:test reconstruction, perfect:    {results['reference_perfect']}")
    print(f"digits:test reconstruction, mean image: {results['reference_mean_image']}")
    print(f"digits:test reconstruction, PCA-32:     {results['reference_pca_32']}")
    autoencoders = {}
    for preset in ("autoencoder_digits", "conv_autoencoder_digits", "sparse_autoencoder_digits"):
        keras.utils.set_random_seed(FLAGS.seed)
        model = keras_zoo.from_preset(preset)
        seconds = train(model, x, y, FLAGS.epochs)
        errors = pixel_errors(model.predict(x_test, batch_size=120, verbose=0), x_test)
        entry = {**errors, "seconds": round(seconds, 1),
                 "parameters": model.trainable_parameter_count()}
        if preset.startswith("sparse"):
            entry["mean_code_activation"] = float(np.mean(model.encode(x_test)))
        results[preset] = entry
        autoencoders[preset] = model
        model.save_to_preset(os.path.join(out, preset), description=f"{preset} on digits")
        print(f"{preset}: {entry}")

    # Ng's sparse autoencoder on the native 8x8 digits (his 8x8 patches).
    keras.utils.set_random_seed(FLAGS.seed)
    x8, _, _ = datasets.load_arrays("digits", "train", 8, 1)
    x8_test, _, _ = datasets.load_arrays("digits", "test", 8, 1)
    ng = keras_zoo.from_preset("sparse_autoencoder_ng")
    seconds = train(ng, x8[:n], y, FLAGS.epochs)
    terms = {k: float(v) for k, v in ng.loss_terms(x8_test, training=False).items()}
    results["sparse_autoencoder_ng"] = {
        "objective_J": terms["loss"], "half_squared_error": terms["reconstruction"],
        "kl_sum": terms["sparsity"], "mean_code_activation": terms["mean_activation"],
        "mse_per_pixel": pixel_errors(ng.predict(x8_test, verbose=0), x8_test)["mse_per_pixel"],
        "seconds": round(seconds, 1)}
    print(f"sparse_autoencoder_ng (8x8): {results['sparse_autoencoder_ng']}")

    # 2. VAEs.
    keras.utils.set_random_seed(FLAGS.seed)
    vae = keras_zoo.VAE.from_preset("vae_digits", seed=FLAGS.seed)
    seconds = train(vae, x, y, FLAGS.epochs)
    terms = [vae.evaluate_dataset(x_test) for _ in range(FLAGS.elbo_samples)]
    elbo = {k: float(np.mean([t[k] for t in terms])) for k in ("elbo", "reconstruction", "kl")}
    results["vae_digits"] = {**elbo, "seconds": round(seconds, 1),
                             "parameters": vae.trainable_parameter_count(),
                             **{f"recon_{k}": v for k, v in pixel_errors(
                                 vae.predict(x_test, batch_size=120, verbose=0),
                                 x_test).items()}}
    print(f"vae_digits: ELBO on digits:test {elbo['elbo']:.1f} nats/image "
          f"(reconstruction {elbo['reconstruction']:.1f}, KL {elbo['kl']:.1f}), "
          f"{seconds:.0f} s")
    vae_folder = os.path.join(out, "vae_preset")
    vae.save_to_preset(vae_folder, description="vae_digits trained on digits")
    keras.utils.set_random_seed(FLAGS.seed)
    vae2d = keras_zoo.VAE.from_preset("vae_digits_2d", seed=FLAGS.seed)
    seconds = train(vae2d, x, y, FLAGS.epochs)
    elbo2d = float(np.mean([vae2d.evaluate_dataset(x_test)["elbo"]
                            for _ in range(FLAGS.elbo_samples)]))
    results["vae_digits_2d"] = {"elbo": elbo2d, "seconds": round(seconds, 1)}
    print(f"vae_digits_2d: ELBO on digits:test {elbo2d:.1f} nats/image, {seconds:.0f} s")

    # 3. Classifiers on frozen codes vs raw pixels, same head.
    for name, encoder in (("vae_digits", vae_folder),
                          ("autoencoder_digits", os.path.join(out, "autoencoder_digits")),
                          ("pixels", None)):
        results[f"classifier_{name}"] = classifier_accuracy(encoder, x, y, x_test, y_test)
        acc = results[f"classifier_{name}"]
        print(f"classifier on {name}: digits:test accuracy {acc['mean']:.4f} "
              f"+- {acc['std']:.4f} over {FLAGS.classifier_seeds} seeds")

    # 4. Pictures.
    pngs = {k: os.path.join(out, f"{k}.png") for k in (
        "reconstructions", "vae_latent_grid", "vae_latent_scatter", "vae_interpolations",
        "vae_samples")}
    shown = x_test[:10]
    rows = [shown] + [np.asarray(m.predict(shown, verbose=0)) for m in autoencoders.values()]
    rows.append(np.asarray(vae.predict(shown, verbose=0)))
    _grid(np.concatenate(rows), len(rows), 10, pngs["reconstructions"],
          titles=["input", "AE", "conv AE", "sparse AE", "VAE"])
    latent_grid(vae2d, pngs["vae_latent_grid"])
    latent_scatter(vae2d, x_test, y_test, pngs["vae_latent_scatter"])
    pairs = [(0, 1), (2, 3), (4, 5), (6, 7)]
    paths = [np.asarray(vae.interpolate(x_test[a], x_test[b], steps=10)) for a, b in pairs]
    _grid(np.concatenate(paths), len(pairs), 10, pngs["vae_interpolations"])
    _grid(np.asarray(vae.sample(40, seed=FLAGS.seed)), 4, 10, pngs["vae_samples"])

    results["total_seconds"] = round(time.time() - total, 1)
    results["pngs"] = pngs
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(f"total {results['total_seconds']:.0f} s; wrote {', '.join(pngs.values())} "
          "and results.json")


if __name__ == "__main__":
    app.run(main)
