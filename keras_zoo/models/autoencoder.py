"""Autoencoders: plain (dense or convolutional) and sparse.

Autoencoder: Hinton & Salakhutdinov 2006, "Reducing the Dimensionality of Data
with Neural Networks". SparseAutoencoder: Ng, "Sparse autoencoder" (CS294A
lecture notes, 2011). The VAE (vae.py) shares the encoder/decoder builders and
the training machinery defined here.
"""

from typing import ClassVar

import keras
import numpy as np
from keras import layers, ops

from keras_zoo.backend import is_tf_dataset, num_replicas
from keras_zoo.data.datasets import DatasetError
from keras_zoo.models.base import ZooModel
from keras_zoo.presets import register_family, register_preset

VARIANTS = ("dense", "conv")
RECONSTRUCTION_LOSSES = ("bce", "mse")


# ---------------------------------------------------------------- builders

def check_codec_config(image_size, variant, conv_filters, reconstruction_loss):
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if reconstruction_loss not in RECONSTRUCTION_LOSSES:
        raise ValueError(f"reconstruction_loss must be one of {RECONSTRUCTION_LOSSES}, "
                         f"got {reconstruction_loss!r}")
    if variant == "conv":
        if not conv_filters:
            raise ValueError("variant='conv' needs at least one entry in conv_filters")
        stride = 2 ** len(conv_filters)
        if image_size % stride:
            raise ValueError(
                f"image_size={image_size} is not divisible by {stride} (2 ** "
                f"len(conv_filters)={len(conv_filters)}): each conv stage halves the image")


def encoder_trunk(images, variant, hidden_units, conv_filters, activation):
    """Images -> a flat feature vector (the encoder minus its code layer).

    Dense: Flatten -> Dense(units) per entry of ``hidden_units``. Conv: a 3x3
    stride-2 conv per entry of ``conv_filters`` (each halves the image), then
    Flatten -> Dense(units) per entry of ``hidden_units``.
    """
    x = images
    if variant == "conv":
        for i, filters in enumerate(conv_filters):
            x = layers.Conv2D(filters, 3, strides=2, padding="same", activation=activation,
                              name=f"encoder_conv_{i}")(x)
    x = layers.Flatten(name="encoder_flatten")(x)
    for i, units in enumerate(hidden_units):
        x = layers.Dense(units, activation=activation, name=f"encoder_dense_{i}")(x)
    return x


def build_decoder(latent_dim, image_size, num_channels, variant, hidden_units, conv_filters,
                  activation):
    """Code (B, latent_dim) -> pixel logits (B, H, W, C): the encoder mirrored.

    The decoder returns logits, not pixels: the Bernoulli (binary
    cross-entropy) reconstruction loss is computed from logits, which stays
    finite where sigmoid saturates. ``decode`` applies the sigmoid.
    """
    code = keras.Input((latent_dim,), name="code")
    x = code
    for i, units in enumerate(reversed(hidden_units)):
        x = layers.Dense(units, activation=activation, name=f"decoder_dense_{i}")(x)
    if variant == "dense":
        x = layers.Dense(image_size * image_size * num_channels, name="decoder_pixels")(x)
        logits = layers.Reshape((image_size, image_size, num_channels),
                                name="decoder_reshape")(x)
    else:
        side = image_size // 2 ** len(conv_filters)
        x = layers.Dense(side * side * conv_filters[-1], activation=activation,
                         name="decoder_project")(x)
        x = layers.Reshape((side, side, conv_filters[-1]), name="decoder_reshape")(x)
        for i, filters in enumerate(reversed(conv_filters)):
            x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same",
                                       activation=activation, name=f"decoder_deconv_{i}")(x)
        logits = layers.Conv2D(num_channels, 3, padding="same", name="decoder_pixels")(x)
    return keras.Model(code, logits, name="decoder")


def reconstruction_error(images, logits, kind):
    """Per-image reconstruction loss summed over pixels, shape (B,).

    ``"bce"``: -log p(x|z) of a Bernoulli per pixel (Kingma & Welling's
    choice for [0, 1] images; for grey values between 0 and 1 it is the
    cross-entropy, not an exact likelihood). ``"mse"``: half the squared
    error, ``1/2 ||x_hat - x||^2``: the reconstruction term of Ng's sparse
    autoencoder objective (CS294A notes, Sec. 2), against which its beta and
    lambda are set, and the -log p(x|z) of a unit-variance Gaussian up to a
    constant.
    Summing over pixels (rather than averaging) keeps the VAE's
    reconstruction and KL terms on the scale of the ELBO.
    """
    # float32 even under mixed precision: a sum over ~1e3-1e5 pixels in float16
    # loses the per-pixel differences the gradient needs.
    logits = ops.cast(logits, "float32")
    images = ops.cast(images, "float32")
    if kind == "bce":
        per_pixel = ops.binary_crossentropy(images, logits, from_logits=True)  # elementwise
    else:
        per_pixel = 0.5 * ops.square(images - ops.sigmoid(logits))
    return ops.sum(ops.reshape(per_pixel, (ops.shape(per_pixel)[0], -1)), axis=-1)


def images_of(data):
    """The images of a batch the trainer feeds: (images, labels) or images."""
    if isinstance(data, (tuple, list)):
        return data[0]
    return data


def _per_replica_scale(loss):
    # Each replica minimises its own batch mean; apply_gradients sums the
    # replicas' gradients, so dividing by their number gives the gradient of
    # the global-batch mean (what keras.losses does via scale_loss_for_distribution).
    replicas = num_replicas()
    return loss / replicas if replicas > 1 else loss


# ---------------------------------------------------------------- base

class Codec(ZooModel):
    """An encoder/decoder pair trained by its own objective.

    Subclasses build ``self.encoder`` (images -> code, or [mean, log-variance])
    and ``self.decoder`` (code -> pixel logits), and define ``loss_terms(x,
    training)``: a dict of per-image-averaged scalars whose ``"loss"`` entry
    is minimised. ``compute_loss`` hands it to Keras' own train and test
    steps (so it trains on every backend, under jit_compile and
    tf.distribute); every term is reported as a metric; labels are ignored.
    """

    MEDIAPIPE_TASKS: ClassVar[dict] = {"embedding": "image_embedder"}

    TERMS = ("loss",)

    def _finish_codec(self, encoder, decoder):
        self.encoder = encoder
        self.decoder = decoder
        self.term_trackers = [keras.metrics.Mean(name=t) for t in self.TERMS]

    # ---- the objective

    def loss_terms(self, x, training):
        raise NotImplementedError

    def compile_defaults(self):
        return {"loss": None, "metrics": []}

    @property
    def metrics(self):
        return list(self.term_trackers)

    def _report(self, terms, x):
        batch = ops.cast(ops.shape(x)[0], "float32")
        for tracker in self.term_trackers:
            tracker.update_state(terms[tracker.name], sample_weight=batch)
        return {t.name: t.result() for t in self.term_trackers}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The objective, for Keras' own train/test step on any backend. ``y``
        and ``y_pred`` are unused: ``loss_terms`` runs the encoder and decoder
        itself (the VAE samples z); the step's unused forward pass is pruned
        by the graph compilers."""
        x = images_of(x)
        terms = self.loss_terms(x, training=training)
        self._report(terms, x)
        return _per_replica_scale(terms["loss"])

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return {t.name: t.result() for t in self.term_trackers}

    # ---- using a trained model

    def encode(self, images):
        """Images -> codes (B, latent_dim)."""
        return self.encoder(self._as_batch(images), training=False)

    def decode(self, codes):
        """Codes (B, latent_dim) -> images in [0, 1]."""
        return ops.sigmoid(self.decoder(ops.convert_to_tensor(codes, "float32"),
                                        training=False))

    def code(self, images):
        """The deterministic code a downstream model reads (the VAE: the mean)."""
        return self.encode(images)

    def interpolate(self, image_a, image_b, steps=8):
        """Decodes ``steps`` codes evenly spaced from code(a) to code(b), both ends
        included: (steps, H, W, C)."""
        if steps < 2:
            raise ValueError(f"interpolate needs steps >= 2 (both ends), got {steps}")
        a, b = self.code(image_a), self.code(image_b)
        t = ops.reshape(ops.linspace(0.0, 1.0, steps), (steps, 1))
        return self.decode((1.0 - t) * a[:1] + t * b[:1])

    def _as_batch(self, images):
        images = ops.convert_to_tensor(images, "float32")
        if len(images.shape) == 3:
            images = ops.expand_dims(images, 0)
        self._check_input_shape(images)
        return images

    def serving_signatures(self):
        """``encoder``: images -> code(s); ``decoder``: code -> images in [0, 1]."""
        code = keras.Input(self.decoder.inputs[0].shape[1:], name="code")
        pixels = layers.Activation("sigmoid", name="pixels", dtype="float32")(
            self.decoder(code))
        return {"encoder": self.encoder,
                "decoder": keras.Model(code, pixels, name="decoder_pixels")}

    def embedding_kinds(self):
        return ("code",)

    def embedding_model(self, kind=None):
        """``"code"``: the encoder's bottleneck (B, latent_dim), what
        ``code()`` returns and a LatentClassifier reads (the VAE: its mean)."""
        kind = self._embedding_kind(kind)
        return self._embedding_from(kind, self.encoder.inputs,
                                    lambda: self.encoder.outputs[0])

    def evaluate_dataset(self, data, batch_size=64):
        """Per-image averages of every loss term over ``data``: a tf.data.Dataset
        of (images, labels) or images, or an array of images. Raises
        DatasetError for an empty input instead of returning NaNs."""
        if is_tf_dataset(data):
            batches = data
        else:
            array = np.asarray(data, "float32")
            if array.ndim != 4 or len(array) == 0:
                raise DatasetError(
                    f"{type(self).__name__}.evaluate_dataset: expected a non-empty "
                    f"(N, H, W, C) image array, got shape {array.shape}")
            batches = (array[i:i + batch_size] for i in range(0, len(array), batch_size))
        totals, count = {}, 0
        for batch in batches:
            x = self._as_batch(images_of(batch))
            n = int(x.shape[0])
            for name, value in self.loss_terms(x, training=False).items():
                totals[name] = totals.get(name, 0.0) + float(value) * n
            count += n
        if not count:
            raise DatasetError(
                f"{type(self).__name__}.evaluate_dataset: the dataset yielded no images")
        return {name: total / count for name, total in totals.items()}


# ---------------------------------------------------------------- families

@register_family
@keras.saving.register_keras_serializable(package="keras_zoo")
class Autoencoder(Codec):
    """Encoder -> bottleneck code -> decoder, trained to reconstruct its input.

    Hinton & Salakhutdinov 2006 used a 784-1000-500-250-30 dense encoder and
    its mirror as decoder for MNIST (preset ``autoencoder_hinton2006``).
    ``variant="conv"`` puts 3x3 stride-2 convolutions (``conv_filters``) in
    front of the dense layers and transposed convolutions behind them. Input
    (image_size, image_size, num_channels) in [0, 1]; the model's output is
    the reconstruction; ``encoder``/``decoder`` are sub-models. Loss: summed
    per-pixel binary cross-entropy (default) or half the squared error
    (``"mse"``, Ng's 1/2 ||x_hat - x||^2), averaged over images, plus
    ``weight_decay / 2`` times the summed squared kernels (0 by default);
    labels in the batches are ignored.
    """

    TERMS = ("loss", "reconstruction")

    def __init__(self, image_size=32, num_channels=1, variant="dense", hidden_units=(256,),
                 conv_filters=(32, 64), latent_dim=32, activation="relu",
                 code_activation=None, reconstruction_loss="bce", weight_decay=0.0,
                 name="autoencoder", **kwargs):
        check_codec_config(image_size, variant, conv_filters, reconstruction_loss)
        if latent_dim <= 0:
            raise ValueError(f"latent_dim must be positive, got {latent_dim}")
        images = keras.Input((image_size, image_size, num_channels), name="images")
        features = encoder_trunk(images, variant, hidden_units, conv_filters, activation)
        code = layers.Dense(latent_dim, activation=code_activation, name="code")(features)
        encoder = keras.Model(images, code, name="encoder")
        decoder = build_decoder(latent_dim, image_size, num_channels, variant, hidden_units,
                                conv_filters, activation)
        inputs = keras.Input((image_size, image_size, num_channels), name="images")
        reconstruction = layers.Activation("sigmoid", name="reconstruction",
                                           dtype="float32")(decoder(encoder(inputs)))
        super().__init__(inputs=inputs, outputs=reconstruction, name=name, **kwargs)
        self.reconstruction_loss = reconstruction_loss
        self.weight_decay = weight_decay
        self._finish_codec(encoder, decoder)

    def loss_terms(self, x, training):
        code = self.encoder(x, training=training)
        logits = self.decoder(code, training=training)
        reconstruction = ops.mean(reconstruction_error(x, logits, self.reconstruction_loss))
        return {"loss": reconstruction + self.decay_penalty(), "reconstruction": reconstruction}

    def decay_penalty(self):
        """(weight_decay / 2) * sum of squared kernel entries (biases excluded), as in Ng's notes."""
        if not self.weight_decay:
            return 0.0
        kernels = [w for w in self.trainable_weights if w.name == "kernel"]
        return 0.5 * self.weight_decay * ops.sum([ops.sum(ops.square(w)) for w in kernels])


@register_family
@keras.saving.register_keras_serializable(package="keras_zoo")
class SparseAutoencoder(Autoencoder):
    """An autoencoder whose wide code is kept mostly inactive (Ng, CS294A notes 2011).

    The code units are sigmoids. Each unit j's mean activation over the batch,
    rho_hat_j, is pulled towards a small target rho by the penalty
    ``sparsity_weight * sum_j KL(rho || rho_hat_j)`` with
    KL(rho || r) = rho log(rho / r) + (1 - rho) log((1 - rho) / (1 - r)).
    We chose this KL form (over an L1 penalty) because it targets a mean
    activation a user can state and check. Ng's exercise: 8x8 patches, 25
    hidden units, rho = 0.01, weight 3, weight decay 1e-4 (preset
    ``sparse_autoencoder_ng``): J = mean over images of 1/2 ||x_hat - x||^2
    (64 pixels) + (lambda / 2) sum W^2 + beta sum_j KL, Ng's objective
    term for term (``reconstruction_loss="mse"`` carries the 1/2). The weight
    trades against a reconstruction summed over pixels: at 32x32 (hundreds of
    nats of cross-entropy) weights of 30-100 bring rho_hat close to rho within
    a few epochs; 3 barely moves it. Under a distribution strategy rho_hat is
    each replica's batch mean (an estimate of the same expectation).
    """

    TERMS = ("loss", "reconstruction", "sparsity", "mean_activation")

    def __init__(self, image_size=32, num_channels=1, hidden_units=(), latent_dim=256,
                 activation="relu", sparsity_target=0.05, sparsity_weight=3.0,
                 reconstruction_loss="bce", weight_decay=0.0, name="sparse_autoencoder",
                 **kwargs):
        if not 0.0 < sparsity_target < 1.0:
            raise ValueError(f"sparsity_target must be in (0, 1), got {sparsity_target}")
        if sparsity_weight < 0:
            raise ValueError(f"sparsity_weight must be >= 0, got {sparsity_weight}")
        super().__init__(image_size=image_size, num_channels=num_channels, variant="dense",
                         hidden_units=hidden_units, latent_dim=latent_dim,
                         activation=activation, code_activation="sigmoid",
                         reconstruction_loss=reconstruction_loss, weight_decay=weight_decay,
                         name=name, **kwargs)
        self.sparsity_target = sparsity_target
        self.sparsity_weight = sparsity_weight

    def loss_terms(self, x, training):
        code = self.encoder(x, training=training)
        logits = self.decoder(code, training=training)
        reconstruction = ops.mean(reconstruction_error(x, logits, self.reconstruction_loss))
        rho_hat = ops.mean(ops.cast(code, "float32"), axis=0)
        sparsity = ops.sum(kl_bernoulli(self.sparsity_target, rho_hat))
        return {"loss": reconstruction + self.sparsity_weight * sparsity + self.decay_penalty(),
                "reconstruction": reconstruction, "sparsity": sparsity,
                "mean_activation": ops.mean(rho_hat)}


def kl_bernoulli(rho, rho_hat, epsilon=1e-7):
    """KL(Bernoulli(rho) || Bernoulli(rho_hat)), elementwise."""
    rho_hat = ops.clip(rho_hat, epsilon, 1.0 - epsilon)
    return rho * ops.log(rho / rho_hat) + (1.0 - rho) * ops.log((1.0 - rho) / (1.0 - rho_hat))


# ---------------------------------------------------------------- presets

_DIGITS = {"image_size": 32, "num_channels": 1}
register_preset("autoencoder_digits", "Autoencoder",
                dict(_DIGITS, hidden_units=[256], latent_dim=32),
                "dense 1024-256-32 autoencoder for 32x32x1 digits", tiny=True)
register_preset("conv_autoencoder_digits", "Autoencoder",
                dict(_DIGITS, variant="conv", conv_filters=[16, 32], hidden_units=[],
                     latent_dim=32),
                "conv autoencoder (3x3/2 convs 16-32, code 32) for 32x32x1 digits", tiny=True)
register_preset("sparse_autoencoder_digits", "SparseAutoencoder",
                dict(_DIGITS, latent_dim=256, sparsity_target=0.05, sparsity_weight=30.0),
                "1024-256 sparse autoencoder, sigmoid code, rho=0.05, weight 30 (the "
                "reconstruction sums 1024 pixels)", tiny=True)
register_preset("autoencoder_hinton2006", "Autoencoder",
                {"image_size": 28, "num_channels": 1, "hidden_units": [1000, 500, 250],
                 "latent_dim": 30, "activation": "sigmoid"},
                "Hinton & Salakhutdinov 2006 MNIST: 784-1000-500-250-30 and mirror")
register_preset("conv_autoencoder_mnist", "Autoencoder",
                {"image_size": 28, "num_channels": 1, "variant": "conv", "conv_filters": [32, 64],
                 "hidden_units": [], "latent_dim": 16},
                "conv autoencoder for 28x28x1 (28 -> 14 -> 7, code 16)")
register_preset("sparse_autoencoder_ng", "SparseAutoencoder",
                {"image_size": 8, "num_channels": 1, "latent_dim": 25, "activation": "sigmoid",
                 "sparsity_target": 0.01, "sparsity_weight": 3.0, "reconstruction_loss": "mse",
                 "weight_decay": 1e-4},
                "Ng's CS294A exercise: 8x8 patches, 25 sigmoid units, rho=0.01, beta=3")
