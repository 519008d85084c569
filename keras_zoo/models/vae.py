"""Variational autoencoder (Kingma & Welling 2014, "Auto-Encoding Variational Bayes")."""

import keras
from keras import layers, ops

from keras_zoo.backend import tf
from keras_zoo.models.autoencoder import (
    Codec,
    build_decoder,
    check_codec_config,
    encoder_trunk,
    reconstruction_error,
)
from keras_zoo.presets import register_family, register_preset


def kl_to_standard_normal(z_mean, z_log_var):
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per example, summed over latent units:
    0.5 * sum(mu^2 + exp(logvar) - 1 - logvar) (Kingma & Welling 2014, appendix B)."""
    z_mean = ops.cast(z_mean, "float32")
    z_log_var = ops.cast(z_log_var, "float32")
    return 0.5 * ops.sum(ops.square(z_mean) + ops.exp(z_log_var) - 1.0 - z_log_var, axis=-1)


def _standard_normal(shape, seed_generator):
    """keras.random.normal, except that every tf.distribute replica draws its own
    eps: replicas share the generator's state, so keras.random alone would give
    example i of each replica's batch the same noise."""
    if keras.backend.backend() != "tensorflow":
        return keras.random.normal(shape, seed=seed_generator)
    replica = tf.distribute.get_replica_context()
    if replica is None or replica.num_replicas_in_sync == 1:
        return keras.random.normal(shape, seed=seed_generator)
    replica_id = tf.cast(replica.replica_id_in_sync_group, tf.int64)
    seed = tf.cast(seed_generator.next(), tf.int64) + tf.stack(
        [replica_id * 7919, tf.constant(0, tf.int64)])
    return tf.random.stateless_normal(shape, seed=seed)


@register_family
@keras.saving.register_keras_serializable(package="keras_zoo")
class VAE(Codec):
    """Encoder q(z|x) = N(mu, diag(exp(logvar))), decoder p(x|z), prior N(0, I).

    The objective (``loss_terms``) samples z = mu + exp(logvar / 2) * eps, eps ~ N(0, I) (the
    reparameterization trick: z is a differentiable function of mu and
    logvar, so gradients reach both encoder heads) and minimises
    reconstruction + beta * KL(q(z|x) || N(0, I)), per image, averaged over
    the batch. Metrics: ``loss``, ``reconstruction`` (-log p(x|z), summed over
    pixels), ``kl`` and ``elbo`` = -(reconstruction + kl) in nats per image
    (one-sample estimate; beta does not enter it). beta = 1 is the paper's
    VAE; beta > 1 is the beta-VAE of Higgins et al. 2017.

    Kingma & Welling's MNIST model: one hidden layer of 500 units, latent 20,
    Bernoulli decoder (preset ``vae_kingma2014_mnist``). The model's output
    (``predict``) is the reconstruction of the posterior mean; ``encode``
    returns (mu, logvar), ``decode`` images, ``sample(n)`` draws from the
    prior, ``interpolate(a, b, steps)`` walks between two posterior means.
    """

    TERMS = ("loss", "reconstruction", "kl", "elbo")

    def __init__(self, image_size=32, num_channels=1, variant="dense", hidden_units=(512,),
                 conv_filters=(32, 64), latent_dim=16, activation="relu", beta=1.0,
                 reconstruction_loss="bce", seed=None, name="vae", **kwargs):
        check_codec_config(image_size, variant, conv_filters, reconstruction_loss)
        if latent_dim <= 0:
            raise ValueError(f"latent_dim must be positive, got {latent_dim}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        images = keras.Input((image_size, image_size, num_channels), name="images")
        features = encoder_trunk(images, variant, hidden_units, conv_filters, activation)
        z_mean = layers.Dense(latent_dim, name="z_mean", dtype="float32")(features)
        z_log_var = layers.Dense(latent_dim, name="z_log_var", dtype="float32")(features)
        encoder = keras.Model(images, [z_mean, z_log_var], name="encoder")
        decoder = build_decoder(latent_dim, image_size, num_channels, variant, hidden_units,
                                conv_filters, activation)
        inputs = keras.Input((image_size, image_size, num_channels), name="images")
        reconstruction = layers.Activation("sigmoid", name="reconstruction", dtype="float32")(
            decoder(encoder(inputs)[0]))
        super().__init__(inputs=inputs, outputs=reconstruction, name=name, **kwargs)
        self.beta = beta
        self.latent_dim = latent_dim
        self.reconstruction_loss = reconstruction_loss
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._finish_codec(encoder, decoder)

    def reparameterize(self, z_mean, z_log_var):
        """z = mu + exp(logvar / 2) * eps with eps ~ N(0, I)."""
        eps = _standard_normal(ops.shape(z_mean), self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * eps

    def loss_terms(self, x, training):
        z_mean, z_log_var = self.encoder(x, training=training)
        logits = self.decoder(self.reparameterize(z_mean, z_log_var), training=training)
        reconstruction = ops.mean(reconstruction_error(x, logits, self.reconstruction_loss))
        kl = ops.mean(kl_to_standard_normal(z_mean, z_log_var))
        return {"loss": reconstruction + self.beta * kl, "reconstruction": reconstruction,
                "kl": kl, "elbo": -(reconstruction + kl)}

    def encode(self, images):
        """Images -> (z_mean, z_log_var), each (B, latent_dim)."""
        return tuple(super().encode(images))

    def code(self, images):
        return self.encode(images)[0]

    def embedding_kinds(self):
        return ("mean",)

    def embedding_model(self, kind=None):
        """``"mean"``: the posterior mean mu (B, latent_dim), deterministic
        (a sample z would add noise to every downstream use)."""
        kind = self._embedding_kind(kind)
        return self._embedding_from(kind, self.encoder.inputs,
                                    lambda: self.encoder.outputs[0])

    def sample(self, n, seed=None):
        """``n`` images decoded from z ~ N(0, I): (n, H, W, C) in [0, 1]."""
        if n <= 0:
            raise ValueError(f"sample(n) needs n >= 1, got {n}")
        return self.decode(keras.random.normal((n, self.latent_dim), seed=seed))


_DIGITS = {"image_size": 32, "num_channels": 1}
register_preset("vae_digits", "VAE", dict(_DIGITS, hidden_units=[256], latent_dim=16),
                "dense VAE 1024-256-(16+16) for 32x32x1 digits", tiny=True)
register_preset("vae_digits_2d", "VAE", dict(_DIGITS, hidden_units=[256], latent_dim=2),
                "dense VAE with a 2-D latent space (for latent-grid plots), 32x32x1")
register_preset("conv_vae_digits", "VAE",
                dict(_DIGITS, variant="conv", conv_filters=[16, 32], hidden_units=[64],
                     latent_dim=16),
                "conv VAE (3x3/2 convs 16-32, dense 64, latent 16) for 32x32x1 digits",
                tiny=True)
register_preset("vae_kingma2014_mnist", "VAE",
                {"image_size": 28, "num_channels": 1, "hidden_units": [500], "latent_dim": 20,
                 "activation": "tanh"},
                "Kingma & Welling 2014 MNIST: 784-500-(20+20), Bernoulli decoder, tanh")
