"""Random patch masking and mask tokens of the masked autoencoder
(He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners")."""

import keras
from keras import layers, ops


def check_mask_ratio(mask_ratio, num_patches=None):
    """Number of visible patches, ``int(N * (1 - mask_ratio))`` as MAE's code
    computes it; one clear error when the ratio leaves nothing to see or
    nothing to predict."""
    if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, (int, float)) \
            or not 0.0 < mask_ratio < 1.0:
        raise ValueError(
            f"mask_ratio must be a number strictly between 0 and 1 (the share of "
            f"patches hidden from the encoder; MAE uses 0.75), got {mask_ratio!r}")
    if num_patches is None:
        return None
    keep = int(num_patches * (1.0 - mask_ratio))
    if not 0 < keep < num_patches:
        raise ValueError(
            f"mask_ratio={mask_ratio} keeps {keep} of {num_patches} patches visible; "
            f"at least one patch must be visible and at least one masked")
    return keep


def _gather_tokens(tokens, indices):
    """tokens (B, N, D), indices (B, K) -> (B, K, D): per-sample gather."""
    return ops.take_along_axis(tokens, ops.expand_dims(indices, -1), axis=1)


@keras.saving.register_keras_serializable(package="keras_zoo")
class RandomPatchMasking(layers.Layer):
    """Keeps a random ``1 - mask_ratio`` share of each sample's patch tokens.

    MAE's per-sample shuffle: draw uniform noise per patch, ``argsort`` it, keep
    the first ``K = int(N * (1 - mask_ratio))`` patches (K = 49 of 196 for
    ViT-B/16 at 224 with the default 0.75). ``argsort`` of the shuffle gives the
    indices that restore patch order, which the decoder uses to put each token
    back in place. K is a Python int, so every shape is static (XLA, TPU).

    Call: ``tokens`` (B, N, D), optional ``noise`` (B, N) to fix the draw.
    Returns ``visible`` (B, K, D) in shuffled order, ``mask`` (B, N) float with
    1 = masked (hidden from the encoder), and ``ids_restore`` (B, N) int32.
    Masking happens in training and inference alike, as in the paper's code:
    the model exists to reconstruct hidden patches. The encoder without
    masking is ``MAE.encoder()``.
    """

    def __init__(self, mask_ratio=0.75, seed=None, **kwargs):
        super().__init__(**kwargs)
        check_mask_ratio(mask_ratio)
        self.mask_ratio = mask_ratio
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def num_visible(self, num_patches):
        return check_mask_ratio(self.mask_ratio, num_patches)

    def build(self, input_shape):
        self.num_visible(input_shape[1])

    def call(self, tokens, noise=None):
        n = tokens.shape[1]
        keep = self.num_visible(n)
        if noise is None:
            noise = self._uniform_noise((ops.shape(tokens)[0], n))
        ids_shuffle = ops.cast(ops.argsort(noise, axis=1), "int32")
        ids_restore = ops.cast(ops.argsort(ids_shuffle, axis=1), "int32")
        visible = _gather_tokens(tokens, ids_shuffle[:, :keep])
        # A patch is masked iff its rank in the shuffle is past the kept ones.
        mask = ops.cast(ids_restore >= keep, tokens.dtype)
        return visible, mask, ids_restore

    def _uniform_noise(self, shape):
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            replica = tf.distribute.get_replica_context()
            if replica is not None and replica.num_replicas_in_sync > 1:
                # Replicas share the seed state, so keras.random would hand every
                # replica the same masks. The state steps its second word, so the
                # replica id goes into the first: no replica repeats another's draw.
                seed = tf.cast(self.seed_generator.next(), tf.int64) + tf.stack(
                    [tf.cast(replica.replica_id_in_sync_group, tf.int64) + 1,
                     tf.constant(0, tf.int64)]) * tf.constant(1_000_003, tf.int64)
                return tf.random.stateless_uniform(shape, seed=seed)
        return keras.random.uniform(shape, seed=self.seed_generator)

    def compute_output_shape(self, input_shape, noise_shape=None):
        b, n, d = input_shape
        return (b, self.num_visible(n), d), (b, n), (b, n)

    def compute_output_spec(self, tokens, noise=None):
        visible, mask, ids = self.compute_output_shape(tokens.shape)
        return (keras.KerasTensor(visible, tokens.dtype), keras.KerasTensor(mask, tokens.dtype),
                keras.KerasTensor(ids, "int32"))

    def get_config(self):
        config = super().get_config()
        config.update(mask_ratio=self.mask_ratio, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="keras_zoo")
class InsertMaskTokens(layers.Layer):
    """The decoder's input: one shared, learned mask token for every masked
    patch, then the tokens unshuffled back into patch order.

    Call: ``x`` (B, 1 + K, D) = [CLS] + the K encoded visible patches in
    shuffled order; ``ids_restore`` (B, N) from ``RandomPatchMasking``.
    Returns (B, 1 + N, D): [CLS] + N tokens in patch order.
    """

    def __init__(self, initializer_stddev=0.02, **kwargs):
        super().__init__(**kwargs)
        self.initializer_stddev = initializer_stddev

    def build(self, x_shape, ids_restore_shape):
        self.mask_token = self.add_weight(
            shape=(1, 1, x_shape[-1]), name="mask_token",
            initializer=keras.initializers.RandomNormal(stddev=self.initializer_stddev))

    def call(self, x, ids_restore):
        b, d = ops.shape(x)[0], x.shape[-1]
        num_masked = ids_restore.shape[1] - (x.shape[1] - 1)
        mask_tokens = ops.broadcast_to(ops.cast(self.mask_token, x.dtype), (b, num_masked, d))
        tokens = ops.concatenate([x[:, 1:], mask_tokens], axis=1)
        return ops.concatenate([x[:, :1], _gather_tokens(tokens, ids_restore)], axis=1)

    def compute_output_shape(self, x_shape, ids_restore_shape):
        return (x_shape[0], 1 + ids_restore_shape[1], x_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update(initializer_stddev=self.initializer_stddev)
        return config
