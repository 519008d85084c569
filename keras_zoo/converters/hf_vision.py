"""Hugging Face vision checkpoints -> keras_zoo ViT, MAE and ResNet.

``from_preset("hf:<folder>")`` on a ``save_pretrained`` folder of

* ``ViTForImageClassification`` (google/vit-*): a ``ViT`` with its head and
  label names (``id2label``);
* ``ViTModel`` (facebook/dino-vit*, google/vit-*-in21k): a ``ViT`` backbone,
  ``num_classes=None``: ``predict`` and ``embed()`` give the [CLS] state after
  the final LayerNorm (``last_hidden_state[:, 0]``). A ``pooler``
  (dense + tanh on that state, the in21k "pre-logits" layer that no DINO
  checkpoint has) is not imported: it is logged and left out, so that every
  ViTModel gives the same features;
* ``ViTMAEForPreTraining`` (facebook/vit-mae-*): an ``MAE``, encoder and
  decoder (the fixed sin-cos position tables in the file are checked against
  ours, not loaded);
* ``ResNetForImageClassification`` / ``ResNetModel`` (microsoft/resnet-*).

Every size and option comes from the folder's ``config.json``; the images the
weights expect from its ``preprocessor_config.json`` (mean/std applied in the
model's graph, resize/crop for ``keras_zoo.preprocess_images``). A checkpoint
our layers cannot represent exactly (another activation, the stride on the
first 1x1 conv, ...) is refused with one line, never approximated.
"""

import logging
import os

import numpy as np

from keras_zoo.converters.huggingface import CheckpointTensors, register_importer
from keras_zoo.presets import PresetError, check_overrides, read_json, transfer_weights

log = logging.getLogger("keras_zoo")

PREPROCESSOR_FILE = "preprocessor_config.json"


# ---------------------------------------------------------------- shared pieces

def conv_kernel(w):
    """torch (out, in, kh, kw) -> Keras (kh, kw, in, out)."""
    return np.transpose(w, (2, 3, 1, 0))


def assign_value(names, variable, value, label):
    """Assigns a value built from several tensors (a fused q/k/v kernel),
    shape-checked and accounted for like ``CheckpointTensors.assign``."""
    if tuple(value.shape) != tuple(variable.shape):
        names.misshapen.append(f"{label} {tuple(value.shape)} for {variable.path} "
                               f"{tuple(variable.shape)}")
        return
    variable.assign(value.astype(variable.dtype))
    names.assigned.add(id(variable))


def assign_layer_norm(names, layer, prefix):
    names.assign(layer.gamma, prefix + ".weight")
    names.assign(layer.beta, prefix + ".bias")


def assign_dense(names, layer, prefix):
    names.assign(layer.kernel, prefix + ".weight", np.transpose)
    names.assign(layer.bias, prefix + ".bias")


def assign_batch_norm(names, layer, prefix):
    names.assign(layer.gamma, prefix + ".weight")
    names.assign(layer.beta, prefix + ".bias")
    names.assign(layer.moving_mean, prefix + ".running_mean")
    names.assign(layer.moving_variance, prefix + ".running_var")
    if prefix + ".num_batches_tracked" in names:
        names.take(prefix + ".num_batches_tracked")  # a counter, no weight


def assign_qkv(names, attention, q, k, v, with_bias):
    """Three (D, D) torch projections -> our fused (D, 3D) ``qkv`` kernel,
    columns [q | k | v], each head-major as in the checkpoint. A checkpoint
    without q/k/v biases (``qkv_bias=False``) gets exact zeros."""
    weights = [names.take(n + ".weight") for n in (q, k, v)]
    if all(w is not None for w in weights):
        assign_value(names, attention.qkv.kernel,
                     np.concatenate([np.asarray(w).T for w in weights], axis=1),
                     f"{q}/key/value.weight")
    if with_bias:
        biases = [names.take(n + ".bias") for n in (q, k, v)]
        if all(b is not None for b in biases):
            assign_value(names, attention.qkv.bias, np.concatenate(biases), f"{q}/key/value.bias")
    else:
        assign_value(names, attention.qkv.bias, np.zeros(attention.qkv.bias.shape, "float32"),
                     "(no q/k/v bias: zeros)")


def hf_vit_layer(names, block, p, qkv_bias):
    """One transformers ``ViTLayer`` (pre-LN) -> ``TransformerEncoderBlock``."""
    assign_layer_norm(names, block.attention_norm, p + "layernorm_before")
    a = p + "attention.attention."
    assign_qkv(names, block.attention, a + "query", a + "key", a + "value", qkv_bias)
    assign_dense(names, block.attention.out, p + "attention.output.dense")
    assign_layer_norm(names, block.mlp_norm, p + "layernorm_after")
    assign_dense(names, block.mlp.fc1, p + "intermediate.dense")
    assign_dense(names, block.mlp.fc2, p + "output.dense")


def square(value, what, folder):
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise PresetError(f"{folder!r}: {what}={list(value)} is not square; keras_zoo "
                              "models take square images and patches")
        value = value[0]
    return int(value)


def label_names(config):
    """The checkpoint's class names in id order, or None for transformers'
    placeholders (LABEL_0, LABEL_1, ...)."""
    id2label = config.get("id2label") or {}
    try:
        names = [id2label[k] for k in sorted(id2label, key=int)]
    except (TypeError, ValueError):
        return None
    if not names or names == [f"LABEL_{i}" for i in range(len(names))]:
        return None
    return [str(n) for n in names]


def read_preprocessing(folder, image_size):
    """The preprocessing spec of ``preprocessor_config.json``, or None (logged)."""
    from keras_zoo.preprocessing import from_hf_processor

    path = os.path.join(folder, PREPROCESSOR_FILE)
    if not os.path.exists(path):
        log.warning("%s has no %s: the model takes [0, 1] images without normalisation",
                    folder, PREPROCESSOR_FILE)
        return None
    try:
        return from_hf_processor(read_json(path), image_size, source=PREPROCESSOR_FILE)
    except ValueError as e:
        raise PresetError(f"{path}: {e}") from None


def processor_image_size(folder, default=224):
    """The input size a folder's image processor produces (ResNet configs have none)."""
    path = os.path.join(folder, PREPROCESSOR_FILE)
    if not os.path.exists(path):
        return default
    config = read_json(path)
    crop, size = config.get("crop_size"), config.get("size") or {}
    if config.get("do_center_crop") and crop:
        return crop.get("height", default) if isinstance(crop, dict) else int(crop)
    if isinstance(size, int):
        return size
    return size.get("shortest_edge", size.get("height", default))


def check_activation(folder, config, expected="gelu"):
    act = config.get("hidden_act", expected)
    if act != expected:
        raise PresetError(f"{folder!r}: hidden_act={act!r}; keras_zoo's layers here use "
                          f"{expected!r} (exact), and an approximation would change the numbers")


def finish(family, folder, arch, overrides, build_and_place, load_weights):
    """The model under ``arch`` with the checkpoint's weights, then moved to
    ``{**arch, **overrides}`` (a new head, another image size) when asked."""
    check_overrides(family, overrides)
    overrides = dict(overrides)
    if arch.get("label_names") and "label_names" not in overrides and \
            overrides.get("num_classes", arch.get("num_classes")) != arch.get("num_classes"):
        overrides["label_names"] = None
    target_config = {**arch, **overrides}
    try:
        if not load_weights:
            return family(**target_config)
        source = family(**arch)
    except (ValueError, TypeError) as e:
        raise PresetError(f"cannot build {family.__name__} from {folder!r}: "
                          f"{str(e).splitlines()[0]}") from e
    build_and_place(source)
    if target_config == arch:
        return source
    try:
        target = family(**target_config)
    except (ValueError, TypeError) as e:
        raise PresetError(f"cannot build {family.__name__} from {folder!r} with {overrides}: "
                          f"{str(e).splitlines()[0]}") from e
    transfer_weights(source, target)
    return target


# ---------------------------------------------------------------- ViT

def vit_arch(folder, config):
    check_activation(folder, config)
    for key in ("use_mask_token",):
        if config.get(key):
            log.info("%s: %s is ignored (pre-training only)", folder, key)
    image_size = square(config.get("image_size", 224), "image_size", folder)
    return {
        "image_size": image_size,
        "patch_size": square(config.get("patch_size", 16), "patch_size", folder),
        "num_channels": config.get("num_channels", 3),
        "hidden_dim": config["hidden_size"],
        "num_layers": config["num_hidden_layers"],
        "num_heads": config["num_attention_heads"],
        "mlp_dim": config["intermediate_size"],
        "layer_norm_epsilon": config.get("layer_norm_eps", 1e-12),
        "dropout": config.get("hidden_dropout_prob", 0.0),
        "attention_dropout": config.get("attention_probs_dropout_prob", 0.0),
        "preprocessing": read_preprocessing(folder, image_size),
    }


def _vit_importer(with_head):
    def load(folder, config, tensors, overrides, load_weights):
        from keras_zoo.models.vit import ViT

        try:
            arch = vit_arch(folder, config)
        except KeyError as e:
            raise PresetError(f"{folder!r}: config.json lacks {e}") from None
        if with_head:
            names_ = label_names(config)
            arch.update(num_classes=len(config.get("id2label") or {}) or
                        config.get("num_labels", 2), pooling="token", label_names=names_)
        else:
            arch.update(num_classes=None, pooling="token")
        qkv_bias = config.get("qkv_bias", True)
        kind = "ViTForImageClassification" if with_head else "ViTModel"

        def place(model):
            names = CheckpointTensors(tensors, f"Hugging Face {kind} checkpoint {folder!r}")
            prefix = "vit." if any(n.startswith("vit.") for n in tensors) else ""
            e = prefix + "embeddings."
            names.assign(model.get_layer("class_token").token, e + "cls_token")
            names.assign(model.get_layer("position_embedding").embedding,
                         e + "position_embeddings")
            projection = model.get_layer("patch_embedding").projection
            names.assign(projection.kernel, e + "patch_embeddings.projection.weight", conv_kernel)
            names.assign(projection.bias, e + "patch_embeddings.projection.bias")
            for i in range(arch["num_layers"]):
                hf_vit_layer(names, model.get_layer(f"encoder_block_{i}"),
                             f"{prefix}encoder.layer.{i}.", qkv_bias)
            assign_layer_norm(names, model.get_layer("encoder_norm"), prefix + "layernorm")
            pooler = [n for n in tensors if n.startswith(prefix + "pooler.")]
            if pooler:
                for n in pooler:
                    names.take(n)
                log.info("%s: the pooler (dense + tanh) is not imported; embed() and predict() "
                         "give the [CLS] state after the final LayerNorm", folder)
            if with_head:
                assign_dense(names, model.get_layer("head"), "classifier")
            names.finish(model)

        return finish(ViT, folder, arch, overrides, place, load_weights)
    return load


register_importer("ViTForImageClassification")(_vit_importer(with_head=True))
register_importer("ViTModel")(_vit_importer(with_head=False))


# ---------------------------------------------------------------- MAE

def _check_sincos(names, name, grid, dim):
    """Takes a fixed position table from the file after checking it is MAE's
    2D sin-cos table with a zero [CLS] row (ours is computed, not stored)."""
    from keras_zoo.layers.embeddings import sincos_2d

    value = names.take(name)
    if value is None:
        return
    expected = np.concatenate([np.zeros((1, dim), "float32"), sincos_2d(grid, dim)])[None]
    if value.shape != expected.shape:
        names.misshapen.append(f"{name} {tuple(value.shape)} for the fixed sin-cos table "
                               f"{expected.shape}")
    elif not np.allclose(value, expected, atol=1e-5, rtol=0):
        names.misshapen.append(f"{name} (not MAE's fixed 2D sin-cos table: max difference "
                               f"{np.abs(value - expected).max():.3g})")


@register_importer("ViTMAEForPreTraining")
def _vit_mae(folder, config, tensors, overrides, load_weights):
    """ViTMAEForPreTraining: vit.* (the encoder, a ViTModel without pooler)
    and decoder.* (decoder_embed, mask_token, decoder_encoder.layer.N,
    decoder_norm, decoder_pred)."""
    from keras_zoo.models.mae import MAE

    try:
        vit = vit_arch(folder, config)
        arch = {k: vit[k] for k in ("image_size", "patch_size", "num_channels", "hidden_dim",
                                    "num_layers", "num_heads", "mlp_dim", "layer_norm_epsilon",
                                    "preprocessing")}
        arch.update(decoder_hidden_dim=config["decoder_hidden_size"],
                    decoder_num_layers=config["decoder_num_hidden_layers"],
                    decoder_num_heads=config["decoder_num_attention_heads"],
                    decoder_mlp_dim=config["decoder_intermediate_size"],
                    mask_ratio=config.get("mask_ratio", 0.75),
                    norm_pix_loss=bool(config.get("norm_pix_loss", False)))
    except KeyError as e:
        raise PresetError(f"{folder!r}: config.json lacks {e}") from None
    qkv_bias = config.get("qkv_bias", True)
    grid = arch["image_size"] // arch["patch_size"]

    def place(model):
        names = CheckpointTensors(tensors, f"Hugging Face ViTMAEForPreTraining checkpoint "
                                           f"{folder!r}")
        e = "vit.embeddings."
        names.assign(model.get_layer("class_token").token, e + "cls_token")
        _check_sincos(names, e + "position_embeddings", grid, arch["hidden_dim"])
        projection = model.get_layer("patch_embedding").projection
        names.assign(projection.kernel, e + "patch_embeddings.projection.weight", conv_kernel)
        names.assign(projection.bias, e + "patch_embeddings.projection.bias")
        for i in range(arch["num_layers"]):
            hf_vit_layer(names, model.get_layer(f"encoder_block_{i}"), f"vit.encoder.layer.{i}.",
                         qkv_bias)
        assign_layer_norm(names, model.get_layer("encoder_norm"), "vit.layernorm")
        d = "decoder."
        assign_dense(names, model.get_layer("decoder_embedding"), d + "decoder_embed")
        names.assign(model.get_layer("mask_tokens").mask_token, d + "mask_token")
        _check_sincos(names, d + "decoder_pos_embed", grid, arch["decoder_hidden_dim"])
        for i in range(arch["decoder_num_layers"]):
            hf_vit_layer(names, model.get_layer(f"decoder_block_{i}"),
                         f"{d}decoder_encoder.layer.{i}.", qkv_bias)
        assign_layer_norm(names, model.get_layer("decoder_norm"), d + "decoder_norm")
        assign_dense(names, model.get_layer("decoder_prediction"), d + "decoder_pred")
        names.finish(model)

    return finish(MAE, folder, arch, overrides, place, load_weights)


# ---------------------------------------------------------------- ResNet

def resnet_arch(folder, config, with_head):
    check_activation(folder, config, "relu")
    layer_type = config.get("layer_type", "bottleneck")
    if layer_type not in ("basic", "bottleneck"):
        raise PresetError(f"{folder!r}: layer_type={layer_type!r}; expected 'basic' or "
                          "'bottleneck'")
    if config.get("downsample_in_first_stage", False):
        raise PresetError(f"{folder!r}: downsample_in_first_stage=True (a strided first stage)"
                          "; keras_zoo's ResNet keeps the first stage at stride 1, as "
                          "microsoft/resnet-* do")
    if config.get("downsample_in_bottleneck", False):
        raise PresetError(f"{folder!r}: downsample_in_bottleneck=True (the stride on the first"
                          " 1x1 conv, ResNet v1); keras_zoo's bottleneck strides its 3x3 "
                          "conv (v1.5, as microsoft/resnet-50)")
    expansion = 4 if layer_type == "bottleneck" else 1
    hidden = list(config["hidden_sizes"])
    if any(h % expansion for h in hidden):
        raise PresetError(f"{folder!r}: hidden_sizes={hidden} are not multiples of the "
                          f"bottleneck expansion {expansion}")
    image_size = processor_image_size(folder)
    arch = {"block_type": layer_type, "stage_depths": list(config["depths"]),
            "stage_filters": [h // expansion for h in hidden], "image_size": image_size,
            "num_channels": config.get("num_channels", 3), "stem": "imagenet",
            "stem_width": config.get("embedding_size", 64),
            "preprocessing": read_preprocessing(folder, image_size)}
    if arch["stem_width"] == arch["stage_filters"][0]:
        arch["stem_width"] = None
    if with_head:
        arch.update(num_classes=len(config.get("id2label") or {}) or config.get("num_labels", 2),
                    label_names=label_names(config))
    else:
        arch["num_classes"] = None
    return arch


def _resnet_importer(with_head):
    def load(folder, config, tensors, overrides, load_weights):
        from keras_zoo.models.resnet import ResNet

        try:
            arch = resnet_arch(folder, config, with_head)
        except KeyError as e:
            raise PresetError(f"{folder!r}: config.json lacks {e}") from None

        def place(model):
            kind = "ResNetForImageClassification" if with_head else "ResNetModel"
            names = CheckpointTensors(tensors, f"Hugging Face {kind} checkpoint {folder!r}")
            p = "resnet." if any(n.startswith("resnet.") for n in tensors) else ""
            stem = p + "embedder.embedder."
            names.assign(model.get_layer("stem_conv").kernel, stem + "convolution.weight",
                         conv_kernel)
            assign_batch_norm(names, model.get_layer("stem_bn"), stem + "normalization")
            for s, depth in enumerate(arch["stage_depths"]):
                for b in range(depth):
                    block = model.get_layer(f"stage{s + 1}_block{b + 1}")
                    q = f"{p}encoder.stages.{s}.layers.{b}."
                    for i, (conv, bn) in enumerate(zip(block.convs, block.bns)):
                        names.assign(conv.kernel, f"{q}layer.{i}.convolution.weight", conv_kernel)
                        assign_batch_norm(names, bn, f"{q}layer.{i}.normalization")
                    if block.projection is not None:
                        names.assign(block.projection.kernel, q + "shortcut.convolution.weight",
                                     conv_kernel)
                        assign_batch_norm(names, block.projection_bn, q + "shortcut.normalization")
            if with_head:
                assign_dense(names, model.get_layer("head"), "classifier.1")
            names.finish(model)

        return finish(ResNet, folder, arch, overrides, place, load_weights)
    return load


register_importer("ResNetForImageClassification")(_resnet_importer(with_head=True))
register_importer("ResNetModel")(_resnet_importer(with_head=False))
