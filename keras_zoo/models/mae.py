"""Masked autoencoder (He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners")."""

from typing import ClassVar

import keras
import numpy as np
from keras import layers, ops

from keras_zoo.layers.embeddings import (
    ClassToken,
    PatchEmbedding,
    SinusoidalPositionEmbedding,
    sincos_2d,
)
from keras_zoo.layers.masking import InsertMaskTokens, RandomPatchMasking, check_mask_ratio
from keras_zoo.layers.transformer import TransformerEncoderBlock
from keras_zoo.models.base import ZooModel
from keras_zoo.preprocessing import (
    IMAGENET,
    check_preprocessing,
    denormalize,
    image_input,
    normalize,
)
from keras_zoo.presets import register_family, register_preset

# Layers the encoder shares with ViT, by name: what ``to_vit`` copies.
_ENCODER_LAYERS = ("patch_embedding", "class_token", "encoder_norm")


@register_family
@keras.saving.register_keras_serializable(package="keras_zoo")
class MAE(ZooModel):
    """Masked autoencoder: a ViT encoder on a random 25 % of the patches, a
    light transformer decoder that predicts the pixels of the other 75 %.

    Encoder: patches + fixed 2D sin-cos positions -> keep ``int(N * (1 -
    mask_ratio))`` random patches per sample -> [CLS] -> pre-LN blocks ->
    LayerNorm. Decoder: linear to ``decoder_hidden_dim`` -> a learned mask
    token per hidden patch, unshuffled to patch order -> its own fixed sin-cos
    positions -> pre-LN blocks -> LayerNorm -> linear to ``patch_size**2 *
    num_channels`` pixels per patch. Loss: mean squared error over the masked
    patches only; ``norm_pix_loss`` normalises each target patch by its own
    mean and variance (the paper's better-transferring default).

    mae_vit_base_patch16: ViT-B/16 encoder (768 wide, 12 blocks), decoder
    8 blocks of width 512 with 16 heads; mask ratio 0.75; 111,655,680
    trainable parameters (111,907,840 with the fixed position tables, the
    "111.91M" the official code prints).

    Initialisation: ``MaskedAutoencoderViT.initialize_weights``
    (facebookresearch/mae ``models_mae.py``), ``weight_init="mae"`` of
    ``keras_zoo.layers.initializers``: xavier_uniform linears (the fused qkv
    as one (D, 3D) matrix, as its ``nn.Linear`` is), the patch kernel
    xavier_uniform on its (p*p*C, D) matrix view, [CLS] and mask token
    N(0, 0.02), zero biases.

    Training augmentation (``train_input_transform``, per example, from the
    decoded image at its own size): ``RandomResizedCrop(image_size,
    scale=train_crop_scale, bicubic)`` and a horizontal flip with
    ``train_flip_probability``, as ``main_pretrain.py``'s ``transform_train``
    (scale (0.2, 1.0), p 0.5).

    Calling the model returns ``{"reconstruction": (B, N, p*p*C), "mask":
    (B, N)}`` (1 = masked). ``fit`` trains on images alone; labels fed along
    are ignored. ``encoder()`` is the unmasked encoder (exported as
    ``"encoder"``); ``to_vit(num_classes=...)`` hands it to ``ViT`` for
    fine-tuning.

    ``preprocessing`` (``keras_zoo.preprocessing``): the input normalisation,
    applied in the graph to the [0, 1] images; the loss target and
    ``reconstruct`` use the same normalised pixels (the official recipe
    normalises with the ImageNet mean/std before the model, so its targets
    are normalised pixels too). ``mae_vit_base_patch16`` carries ImageNet's.
    """

    MEDIAPIPE_TASKS: ClassVar[dict] = {"embedding": "image_embedder"}

    def __init__(self, image_size=224, patch_size=16, num_channels=3, hidden_dim=768,
                 num_layers=12, num_heads=12, mlp_dim=3072, decoder_hidden_dim=512,
                 decoder_num_layers=8, decoder_num_heads=16, decoder_mlp_dim=2048,
                 mask_ratio=0.75, norm_pix_loss=False, layer_norm_epsilon=1e-6,
                 seed=None, train_crop_scale=(0.2, 1.0), train_flip_probability=0.5,
                 preprocessing=None, name="mae", **kwargs):
        if image_size % patch_size:
            raise ValueError(
                f"image_size={image_size} is not divisible by patch_size={patch_size}")
        for width, heads, what in ((hidden_dim, num_heads, ""),
                                   (decoder_hidden_dim, decoder_num_heads, "decoder_")):
            if width % heads:
                raise ValueError(f"{what}hidden_dim={width} is not divisible by "
                                 f"{what}num_heads={heads}")
            if width % 4:
                raise ValueError(f"{what}hidden_dim={width} must be divisible by 4 for "
                                 "the 2D sin-cos position table")
        check_mask_ratio(mask_ratio, (image_size // patch_size) ** 2)
        low, high = train_crop_scale
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"train_crop_scale must be (low, high) with 0 < low <= high "
                             f"<= 1, got {(low, high)}")
        if not 0.0 <= train_flip_probability <= 1.0:
            raise ValueError(f"train_flip_probability must be in [0, 1], got "
                             f"{train_flip_probability!r}")
        block = {"norm_first": True, "layer_norm_epsilon": layer_norm_epsilon,
                 "weight_init": "mae"}

        images, x = image_input(image_size, num_channels, preprocessing)
        x = PatchEmbedding(patch_size, hidden_dim, weight_init="mae",
                           name="patch_embedding")(x)
        # Positions are added before masking, so each kept token still knows
        # where it came from; [CLS] gets no position (MAE's zero entry).
        x = SinusoidalPositionEmbedding(grid=True, name="position_embedding")(x)
        x, mask, ids_restore = RandomPatchMasking(mask_ratio, seed=seed,
                                                  name="random_masking")(x)
        x = ClassToken(weight_init="mae", name="class_token")(x)
        for i in range(num_layers):
            x = TransformerEncoderBlock(num_heads, mlp_dim, name=f"encoder_block_{i}",
                                        **block)(x)
        x = layers.LayerNormalization(epsilon=layer_norm_epsilon, name="encoder_norm")(x)

        x = layers.Dense(decoder_hidden_dim, name="decoder_embedding")(x)
        x = InsertMaskTokens(name="mask_tokens")(x, ids_restore)
        x = SinusoidalPositionEmbedding(grid=True, num_prefix_tokens=1,
                                        name="decoder_position_embedding")(x)
        for i in range(decoder_num_layers):
            x = TransformerEncoderBlock(decoder_num_heads, decoder_mlp_dim,
                                        name=f"decoder_block_{i}", **block)(x)
        x = layers.LayerNormalization(epsilon=layer_norm_epsilon, name="decoder_norm")(x)
        x = layers.Dense(patch_size * patch_size * num_channels, dtype="float32",
                         name="decoder_prediction")(x)
        outputs = {"reconstruction": x[:, 1:], "mask": mask}
        super().__init__(inputs=images, outputs=outputs, name=name, **kwargs)
        self.patch_size = patch_size
        self.norm_pix_loss = norm_pix_loss
        # vars(): a plain dict, untracked by Keras.
        vars(self)["_input_spec_data"] = check_preprocessing(preprocessing, num_channels,
                                                             image_size)

    # ---------------------------------------------------------------- training

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Masked-patch MSE. Keras' own train_step/test_step call this, so
        loss scaling (mixed precision), the loss tracker and ``jit_compile``
        come from Keras; labels ``y`` are ignored. A ``sample_weight`` of 0
        (padding in a static-shape batch) removes that image's patches."""
        images = x[0] if isinstance(x, (tuple, list)) else x
        mask = ops.cast(y_pred["mask"], "float32")
        if sample_weight is not None:
            mask = mask * ops.reshape(ops.cast(sample_weight, "float32"), (-1, 1))
        # The target is the image the encoder sees: normalised with the preset's
        # mean/std (main_pretrain.py normalises before the model, so do its targets).
        target = patchify(normalize(images, self._input_spec_data), self.patch_size)
        loss = masked_patch_loss(target, y_pred["reconstruction"], mask, self.norm_pix_loss)
        return _scale_for_replicas(loss)

    def compile_defaults(self):
        return {"loss": None, "metrics": []}

    def train_input_transform(self, seed=None):
        """Each decoded example ``(image, label)``, at its own size, -> a
        random-resized crop (bicubic) at the model's size, flipped with
        ``train_flip_probability``: MAE's ``transform_train``."""
        import tensorflow as tf

        from keras_zoo.data import augment

        c = self._zoo_config
        seed = c["seed"] if seed is None else seed
        rng = (tf.random.Generator.from_seed(seed) if seed is not None
               else tf.random.Generator.from_non_deterministic_state())

        def transform(image, label):
            image = augment.match_channels(augment.to_unit_float(image), c["num_channels"])
            image = augment.random_resized_crop(image, c["image_size"],
                                                c["train_crop_scale"], rng)
            return augment.horizontal_flip(image, c["train_flip_probability"], rng), label

        return transform

    # ---------------------------------------------------------------- use

    def encoder(self):
        """The encoder on all patches, no masking: images -> (B, 1 + N, D)
        tokens after the final LayerNorm. Shares this model's weights."""
        cached = vars(self).get("_encoder_model")
        if cached is not None:
            return cached
        images = keras.Input(self.inputs[0].shape[1:], name="images")
        x = self._normalized(images)
        x = self.get_layer("position_embedding")(self.get_layer("patch_embedding")(x))
        x = self.get_layer("class_token")(x)
        for i in range(self._zoo_config["num_layers"]):
            x = self.get_layer(f"encoder_block_{i}")(x)
        x = self.get_layer("encoder_norm")(x)
        model = keras.Model(images, x, name=f"{self.name}_encoder")
        vars(self)["_encoder_model"] = model  # bypasses Keras' layer tracking
        return model

    def _normalized(self, images):
        if any(layer.name == "image_normalization" for layer in self.layers):
            return self.get_layer("image_normalization")(images)
        return images

    def forward(self, images, noise=None, training=False):
        """The model's forward pass with the masking draw fixed by ``noise``
        (B, N) (the patches with the smallest noise stay visible, as in MAE's
        ``random_masking`` and Hugging Face's ``ViTMAEForPreTraining(noise=)``):
        ``{"reconstruction", "mask", "encoded"}``, ``encoded`` being the
        encoder's output on [CLS] + the visible patches."""
        c = self._zoo_config
        x = self._normalized(self._unit_images(ops.convert_to_tensor(images)))
        x = self.get_layer("position_embedding")(self.get_layer("patch_embedding")(x))
        x, mask, ids_restore = self.get_layer("random_masking")(x, noise=noise)
        x = self.get_layer("class_token")(x)
        for i in range(c["num_layers"]):
            x = self.get_layer(f"encoder_block_{i}")(x, training=training)
        encoded = self.get_layer("encoder_norm")(x)
        x = self.get_layer("decoder_embedding")(encoded)
        x = self.get_layer("mask_tokens")(x, ids_restore)
        x = self.get_layer("decoder_position_embedding")(x)
        for i in range(c["decoder_num_layers"]):
            x = self.get_layer(f"decoder_block_{i}")(x, training=training)
        x = self.get_layer("decoder_prediction")(self.get_layer("decoder_norm")(x))
        return {"reconstruction": x[:, 1:], "mask": mask, "encoded": encoded}

    def serving_signatures(self):
        return {"encoder": self.encoder()}

    def embedding_kinds(self):
        return ("cls", "mean")

    def embedding_model(self, kind=None):
        """The unmasked ``encoder()`` pooled to (B, hidden_dim). ``"cls"`` (the
        default): the CLS token after the final LayerNorm, what the official
        linear probe reads (main_linprobe.py: ``global_pool`` off unless
        asked); ``"mean"``: the mean of the normalised patch tokens (the
        official fine-tuning pools before the norm and trains a new one after
        it; a frozen encoder has no such norm, so its own is kept)."""
        from keras_zoo.models.vit import _MeanPatches, _TakeToken

        kind = self._embedding_kind(kind)
        encoder = self.encoder()
        pool = _TakeToken if kind == "cls" else _MeanPatches
        return self._embedding_from(kind, encoder.inputs, lambda: pool(
            name=f"{kind}_embedding")(encoder.outputs[0]))

    def reconstruct(self, images):
        """Runs the model once; returns numpy ``(reconstructed, masked_input,
        mask)`` images of the input's shape. The reconstruction pastes the
        visible patches back (as the paper's figures do); with
        ``norm_pix_loss`` the predicted patches are de-normalised with each
        true patch's mean and variance."""
        images = ops.convert_to_tensor(self._unit_images(images), "float32")
        out = self(images, training=False)
        pred, mask = out["reconstruction"], out["mask"]
        spec = self._input_spec_data
        target = patchify(normalize(images, spec), self.patch_size)
        if self.norm_pix_loss:
            mean, var = _patch_stats(target)
            pred = pred * ops.sqrt(var + 1e-6) + mean
        # Back from the normalised pixels the model predicts to [0, 1] images.
        target = patchify(images, self.patch_size)
        size, channels = images.shape[1], images.shape[-1]
        pred = patchify(denormalize(unpatchify(pred, self.patch_size, size, channels), spec),
                        self.patch_size)
        m = ops.expand_dims(mask, -1)
        reconstructed = unpatchify(pred * m + target * (1 - m), self.patch_size, size, channels)
        masked = unpatchify(target * (1 - m), self.patch_size, size, channels)
        mask_image = unpatchify(ops.broadcast_to(m, ops.shape(target)), self.patch_size,
                                size, channels)
        return tuple(ops.convert_to_numpy(t) for t in (reconstructed, masked, mask_image))

    def to_vit(self, num_classes=1000, pooling="token", **vit_overrides):
        """A ``ViT`` holding this encoder's weights, ready to fine-tune.

        Patch embedding, [CLS], every encoder block and the final norm are
        copied layer by layer; ViT's learned position table starts from the
        fixed sin-cos table (zeros for [CLS]); the classifier head is new
        (zeros, as ViT initialises it). Unmasked features of the two models
        are identical. ``vit_overrides``: dropout, attention_dropout."""
        from keras_zoo.models.vit import ViT

        c = self._zoo_config
        vit = ViT(image_size=c["image_size"], patch_size=c["patch_size"],
                  num_channels=c["num_channels"], hidden_dim=c["hidden_dim"],
                  num_layers=c["num_layers"], num_heads=c["num_heads"],
                  mlp_dim=c["mlp_dim"], num_classes=num_classes, pooling=pooling,
                  layer_norm_epsilon=c["layer_norm_epsilon"],
                  preprocessing=c["preprocessing"], **vit_overrides)
        names = list(_ENCODER_LAYERS) + [f"encoder_block_{i}" for i in range(c["num_layers"])]
        for name in names:
            vit.get_layer(name).set_weights(self.get_layer(name).get_weights())
        grid = c["image_size"] // c["patch_size"]
        table = np.concatenate([np.zeros((1, c["hidden_dim"]), "float32"),
                                sincos_2d(grid, c["hidden_dim"])])
        vit.get_layer("position_embedding").set_weights([table[None]])
        return vit


def patchify(images, patch_size):
    """(B, H, W, C) -> (B, N, p*p*C), patches in row-major grid order (the
    order PatchEmbedding emits), pixels within a patch as (row, col, channel)."""
    b, h, w, c = ops.shape(images)[0], images.shape[1], images.shape[2], images.shape[3]
    gh, gw = h // patch_size, w // patch_size
    x = ops.reshape(images, (b, gh, patch_size, gw, patch_size, c))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (b, gh * gw, patch_size * patch_size * c))


def unpatchify(patches, patch_size, image_size, num_channels):
    """Inverse of ``patchify`` for square images: (B, N, p*p*C) -> (B, H, W, C)."""
    b, g = ops.shape(patches)[0], image_size // patch_size
    x = ops.reshape(patches, (b, g, g, patch_size, patch_size, num_channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (b, image_size, image_size, num_channels))


def _patch_stats(target):
    """Per-patch mean and unbiased variance (torch's ``var`` in MAE's code)."""
    n = target.shape[-1]
    mean = ops.mean(target, axis=-1, keepdims=True)
    var = ops.var(target, axis=-1, keepdims=True) * (n / max(n - 1, 1))
    return mean, var


def masked_patch_loss(target, prediction, mask, norm_pix_loss=False):
    """MAE's objective: per-patch mean squared error, averaged over the masked
    patches only (``mask`` 1 = masked). With ``norm_pix_loss`` each target
    patch is first normalised by its own mean and variance."""
    target = ops.cast(target, "float32")
    prediction = ops.cast(prediction, "float32")
    mask = ops.cast(mask, "float32")
    if norm_pix_loss:
        mean, var = _patch_stats(target)
        target = (target - mean) / ops.sqrt(var + 1e-6)
    per_patch = ops.mean(ops.square(prediction - target), axis=-1)
    return ops.sum(per_patch * mask) / ops.maximum(ops.sum(mask), 1.0)


def _scale_for_replicas(loss):
    """Under tf.distribute each replica's gradients are summed: divide the
    per-replica mean by the replica count so the sum is the global mean (what
    Keras' own losses do)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            loss = loss / replicas
    return loss


register_preset(
    "mae_vit_base_patch16", "MAE",
    {"image_size": 224, "patch_size": 16, "num_channels": 3, "hidden_dim": 768,
     "num_layers": 12, "num_heads": 12, "mlp_dim": 3072, "decoder_hidden_dim": 512,
     "decoder_num_layers": 8, "decoder_num_heads": 16, "decoder_mlp_dim": 2048,
     "mask_ratio": 0.75, "norm_pix_loss": True,
     # main_pretrain.py: Normalize(ImageNet mean, std) after ToTensor.
     "preprocessing": {**IMAGENET, "resize": "shorter_side", "resize_size": 256,
                       "crop": "center", "crop_rounding": "round", "interpolation": "bicubic",
                       "source": "facebookresearch/mae (ImageNet mean/std)"}},
    "MAE ViT-B/16 encoder, 8-block 512-wide decoder, 75 % masking, normalised-pixel loss")
register_preset(
    "mae_tiny_digits", "MAE",
    {"image_size": 32, "patch_size": 4, "num_channels": 1, "hidden_dim": 64, "num_layers": 2,
     "num_heads": 4, "mlp_dim": 128, "decoder_hidden_dim": 32, "decoder_num_layers": 1,
     "decoder_num_heads": 4, "decoder_mlp_dim": 64, "mask_ratio": 0.75, "norm_pix_loss": False},
    "a 2-block MAE for 32x32x1 digits (8x8 grid of 4x4 patches, 16 visible)", tiny=True)
