"""Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words")."""

from typing import ClassVar

import keras
from keras import layers

from keras_zoo.layers.droppath import drop_path_rates
from keras_zoo.layers.embeddings import ClassToken, LearnedPositionEmbedding, PatchEmbedding
from keras_zoo.layers.initializers import SCHEMES
from keras_zoo.layers.normalization import LayerNormalization
from keras_zoo.layers.transformer import TransformerEncoderBlock
from keras_zoo.models.base import ZooModel
from keras_zoo.preprocessing import check_label_names, image_input
from keras_zoo.presets import register_family, register_preset


@register_family
@keras.saving.register_keras_serializable(package="keras_zoo")
class ViT(ZooModel):
    """Patches -> [CLS] + learned 1D positions -> pre-LN encoder blocks -> LayerNorm -> head.

    ViT-B/16: 224x224x3 input, 16x16 patches (196 + 1 tokens), width 768,
    12 blocks of 12 heads, MLP 3072 (ratio 4, GELU), 86,567,656 parameters
    with a 1000-class head. ``pooling="token"`` reads the CLS token,
    ``"gap"`` averages the patch tokens. ``num_classes=None`` returns the
    pooled features; ``pooling=None`` returns the whole token sequence.
    Loading a preset at another ``image_size`` resamples the position
    embedding grid.

    ``drop_path_rate``: stochastic depth, rising linearly over the blocks from
    0 to this rate (DeiT and DINO's student use 0.1; 0 = off, the default).
    ``weight_init``: "big_vision" (default: the paper's code,
    google-research/vision_transformer ``models_vit.py``, which big_vision's
    ``vit.py`` shares: lecun_normal patch kernel, xavier q/k/v/out with
    per-matrix fans, xavier MLP with N(0, 1e-6) biases, zero [CLS] and head;
    N(0, 0.02) positions are vision_transformer's ``AddPositionEmbs``
    (big_vision's learned positions use N(0, 1/sqrt(width)))) or "dino"
    (facebookresearch/dino ``vision_transformer.py``: N(0, 0.02) linears,
    torch-default patch conv, N(0, 0.02) [CLS]); see
    ``keras_zoo.layers.initializers``.

    ``preprocessing``: how the weights' images were made (mean/std applied
    in the graph on [0, 1] inputs; resize/crop for ``preprocess_images``),
    see ``keras_zoo.preprocessing``. ``label_names``: one name per class.
    """

    MEDIAPIPE_TASKS: ClassVar[dict] = {"serving_default": "image_classifier",
                                       "embedding": "image_embedder"}

    def __init__(self, image_size=224, patch_size=16, num_channels=3, hidden_dim=768,
                 num_layers=12, num_heads=12, mlp_dim=3072, num_classes=1000,
                 pooling="token", dropout=0.0, attention_dropout=0.0,
                 layer_norm_epsilon=1e-6, drop_path_rate=0.0, weight_init="big_vision",
                 preprocessing=None, label_names=None, name="vit", **kwargs):
        if image_size % patch_size:
            raise ValueError(
                f"image_size={image_size} is not divisible by patch_size={patch_size}")
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim={hidden_dim} is not divisible by num_heads={num_heads}")
        if pooling not in ("token", "gap", None):
            raise ValueError(f"pooling must be 'token', 'gap' or None, got {pooling!r}")
        if weight_init not in SCHEMES:
            raise ValueError(f"weight_init must be one of {SCHEMES}, got {weight_init!r}")
        if isinstance(drop_path_rate, bool) or not isinstance(drop_path_rate, (int, float)) \
                or not 0 <= drop_path_rate < 1:
            raise ValueError(f"drop_path_rate must be a number in [0, 1), got {drop_path_rate!r}")
        check_label_names(label_names, num_classes if pooling is not None else None)
        inputs, x = image_input(image_size, num_channels, preprocessing)
        x = PatchEmbedding(patch_size, hidden_dim, weight_init=weight_init,
                           name="patch_embedding")(x)
        x = ClassToken(weight_init=weight_init, name="class_token")(x)
        x = LearnedPositionEmbedding(num_prefix_tokens=1, name="position_embedding")(x)
        x = layers.Dropout(dropout, name="embedding_dropout")(x)
        for i, rate in enumerate(drop_path_rates(drop_path_rate, num_layers)):
            x = TransformerEncoderBlock(
                num_heads, mlp_dim, dropout=dropout, attention_dropout=attention_dropout,
                norm_first=True, layer_norm_epsilon=layer_norm_epsilon,
                drop_path_rate=rate, weight_init=weight_init,
                name=f"encoder_block_{i}")(x)
        x = LayerNormalization(epsilon=layer_norm_epsilon, name="encoder_norm")(x)
        if pooling == "token":
            x = _TakeToken(name="cls_pool")(x)
        elif pooling == "gap":
            x = _MeanPatches(name="gap_pool")(x)
        if num_classes and pooling is not None:
            x = layers.Dense(num_classes, kernel_initializer="zeros", name="head",
                             dtype="float32")(x)
        super().__init__(inputs=inputs, outputs=x, name=name, **kwargs)

    def mediapipe_tasks(self):
        """A headless ViT (``num_classes=0`` or ``pooling=None``) embeds, it does not classify."""
        tasks = super().mediapipe_tasks()
        if not (self._zoo_config["num_classes"] and self._zoo_config["pooling"] is not None):
            tasks.pop("serving_default")
        return tasks

    def embedding_kinds(self):
        # The default is what this model's head reads (a "gap" model's CLS
        # token was never trained to summarise the image).
        return ("mean", "cls") if self._zoo_config["pooling"] == "gap" else ("cls", "mean")

    def embedding_model(self, kind=None):
        """``"cls"``: the CLS token after the final LayerNorm (the paper's image
        representation); ``"mean"``: the mean of the patch tokens (CLS
        excluded). Both (B, hidden_dim), whatever ``pooling`` the model has."""
        kind = self._embedding_kind(kind)
        pool = _TakeToken if kind == "cls" else _MeanPatches
        return self._embedding_from(kind, self.inputs, lambda: pool(name=f"{kind}_embedding")(
            self.get_layer("encoder_norm").output))


@keras.saving.register_keras_serializable(package="keras_zoo")
class _TakeToken(layers.Layer):
    """(B, T, D) -> (B, D): the CLS token."""

    def call(self, x):
        # A [:, :1] slice + reshape lowers to SLICE + RESHAPE in TFLite, which
        # XNNPACK delegates; x[:, 0] becomes a STRIDED_SLICE it does not.
        return keras.ops.reshape(x[:, :1], (-1, x.shape[-1]))

    def compute_output_shape(self, s):
        return (s[0], s[2])


@keras.saving.register_keras_serializable(package="keras_zoo")
class _MeanPatches(layers.Layer):
    """(B, 1 + N, D) -> (B, D): mean over the patch tokens (CLS excluded)."""

    def call(self, x):
        return keras.ops.mean(x[:, 1:], axis=1)

    def compute_output_shape(self, s):
        return (s[0], s[2])


_SIZES = {  # width, depth, heads, mlp (Table 1 of the paper; tiny/small from DeiT)
    "tiny": (192, 12, 3, 768),
    "small": (384, 12, 6, 1536),
    "base": (768, 12, 12, 3072),
    "large": (1024, 24, 16, 4096),
}


def _vit(size, patch, **extra):
    width, depth, heads, mlp = _SIZES[size]
    return dict(patch_size=patch, hidden_dim=width, num_layers=depth, num_heads=heads,
                mlp_dim=mlp, **extra)


for _size in _SIZES:
    register_preset(f"vit_{_size}_patch16_224", "ViT", _vit(_size, 16),
                    f"ViT-{_size[0].upper()}/16, 224x224x3, 1000 classes")
register_preset("vit_base_patch32_224", "ViT", _vit("base", 32),
                "ViT-B/32, 224x224x3, 1000 classes")
register_preset("vit_tiny_digits", "ViT",
                dict(image_size=32, patch_size=8, num_channels=1, hidden_dim=64,
                     num_layers=2, num_heads=4, mlp_dim=128, num_classes=10),
                "a 2-block ViT for 32x32x1 digits (4x4 patches of 8x8)", tiny=True)
