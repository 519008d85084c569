"""timm checkpoints in their Hub format -> keras_zoo ViT and ResNet.

A folder as ``timm.models.save_for_hf`` writes it (what ``hf-hub:timm/...``
repos hold): ``config.json`` with ``architecture`` (a timm model name such as
``vit_base_patch16_224`` or ``resnet50``), ``model_args`` (the keyword
arguments that differ from the name's defaults), ``num_classes``,
``global_pool`` and ``pretrained_cfg`` (mean, std, crop_pct, interpolation,
input_size), plus ``model.safetensors``. The architecture name gives the
defaults (timm's registry), ``model_args`` override them, the tensors' shapes
are checked against the result; the ``pretrained_cfg`` becomes the model's
``preprocessing`` (``keras_zoo.preprocessing.from_timm_config``).

Supported: ``vit_{tiny,small,base,large}_patch{N}_{size}`` with a [CLS]
token and ``global_pool="token"`` (the augreg checkpoints), and the plain
ResNets ``resnet18/26/34/50/101/152`` (7x7 stem, stride on the 3x3 conv as
timm's Bottleneck). Any other option is refused, naming it.
"""

import re

import numpy as np

from keras_zoo.converters.hf_vision import (
    assign_batch_norm,
    assign_dense,
    assign_layer_norm,
    assign_value,
    conv_kernel,
    finish,
    square,
)
from keras_zoo.converters.huggingface import CheckpointTensors, register_importer
from keras_zoo.presets import PresetError

_VIT_SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12),
              "large": (1024, 24, 16)}
_RESNETS = {"resnet18": ("basic", [2, 2, 2, 2]), "resnet26": ("bottleneck", [2, 2, 2, 2]),
            "resnet34": ("basic", [3, 4, 6, 3]), "resnet50": ("bottleneck", [3, 4, 6, 3]),
            "resnet101": ("bottleneck", [3, 4, 23, 3]),
            "resnet152": ("bottleneck", [3, 8, 36, 3])}

# model_args that do not change the inference graph, or whose value is checked below.
_VIT_ARGS = {"img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio",
             "qkv_bias", "num_classes", "in_chans", "global_pool", "class_token",
             "drop_rate", "pos_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate"}
_VIT_FIXED = {"class_token": True, "global_pool": "token", "no_embed_class": False,
              "pre_norm": False, "fc_norm": None, "init_values": None, "qk_norm": False,
              "reg_tokens": 0, "dynamic_img_size": False}
# stem_width: read by timm for deep stems only (refused below); the 7x7 stem ignores it.
_RESNET_ARGS = {"layers", "channels", "num_classes", "in_chans", "global_pool", "drop_rate",
                "drop_path_rate", "zero_init_last", "stem_width"}
_RESNET_FIXED = {"global_pool": "avg", "stem_type": "", "avg_down": False, "cardinality": 1,
                 "base_width": 64, "output_stride": 32, "replace_stem_pool": False,
                 "block_reduce_first": 1, "down_kernel_size": 1}


def _check_args(folder, arch, args, allowed, fixed):
    for key, value in args.items():
        if key in fixed and value != fixed[key] and key not in allowed:
            raise PresetError(f"{folder!r}: timm {arch} with {key}={value!r} cannot be imported "
                              f"exactly; keras_zoo supports {key}={fixed[key]!r}")
        if key not in allowed and key not in fixed:
            raise PresetError(f"{folder!r}: timm {arch} model_args {key}={value!r} is not "
                              f"supported; keras_zoo reads {sorted(allowed | set(fixed))}")
    for key in ("global_pool", "class_token"):
        if key in fixed and args.get(key, fixed[key]) != fixed[key]:
            raise PresetError(f"{folder!r}: timm {arch} with {key}={args[key]!r}; keras_zoo "
                              f"imports {key}={fixed[key]!r}")


def _image_size(folder, args, cfg, default):
    if "img_size" in args:
        return square(args["img_size"], "img_size", folder)
    size = cfg.get("input_size")
    return square(size[1:], "pretrained_cfg input_size", folder) if size else default


def _preprocessing(folder, cfg, image_size):
    from keras_zoo.preprocessing import from_timm_config

    try:
        return from_timm_config(cfg, image_size, source="timm pretrained_cfg")
    except ValueError as e:
        raise PresetError(f"{folder!r}: {e}") from None


def _label_names(config, num_classes):
    names = config.get("label_names")
    if isinstance(names, list) and len(names) == num_classes and all(
            isinstance(n, str) for n in names):
        return names
    return None


def _vit(folder, config, tensors, overrides, load_weights, arch_name, match):
    from keras_zoo.models.vit import ViT

    args = dict(config.get("model_args") or {})
    for key in ("num_classes", "global_pool"):
        if key in config:
            args.setdefault(key, config[key])
    _check_args(folder, arch_name, args, _VIT_ARGS, _VIT_FIXED)
    width, depth, heads = _VIT_SIZES[match.group(1)]
    width, depth = args.get("embed_dim", width), args.get("depth", depth)
    heads = args.get("num_heads", heads)
    cfg = config.get("pretrained_cfg") or {}
    image_size = _image_size(folder, args, cfg, int(match.group(3)))
    num_classes = args.get("num_classes", 1000) or None
    arch = {"image_size": image_size,
            "patch_size": square(args.get("patch_size", int(match.group(2))), "patch_size",
                                 folder),
            "num_channels": args.get("in_chans", 3), "hidden_dim": width, "num_layers": depth,
            "num_heads": heads, "mlp_dim": int(width * args.get("mlp_ratio", 4.0)),
            "num_classes": num_classes, "pooling": "token", "layer_norm_epsilon": 1e-6,
            "preprocessing": _preprocessing(folder, cfg, image_size),
            "label_names": _label_names(config, num_classes)}
    qkv_bias = args.get("qkv_bias", True)

    def place(model):
        names = CheckpointTensors(tensors, f"timm {arch_name} checkpoint {folder!r}")
        names.assign(model.get_layer("class_token").token, "cls_token")
        names.assign(model.get_layer("position_embedding").embedding, "pos_embed")
        projection = model.get_layer("patch_embedding").projection
        names.assign(projection.kernel, "patch_embed.proj.weight", conv_kernel)
        names.assign(projection.bias, "patch_embed.proj.bias")
        for i in range(depth):
            block, p = model.get_layer(f"encoder_block_{i}"), f"blocks.{i}."
            assign_layer_norm(names, block.attention_norm, p + "norm1")
            # timm's fused qkv is (3D, D), rows [q | k | v], each head-major: ours transposed.
            names.assign(block.attention.qkv.kernel, p + "attn.qkv.weight", np.transpose)
            if qkv_bias:
                names.assign(block.attention.qkv.bias, p + "attn.qkv.bias")
            else:
                assign_value(names, block.attention.qkv.bias,
                             np.zeros(block.attention.qkv.bias.shape, "float32"), "(no qkv bias)")
            assign_dense(names, block.attention.out, p + "attn.proj")
            assign_layer_norm(names, block.mlp_norm, p + "norm2")
            assign_dense(names, block.mlp.fc1, p + "mlp.fc1")
            assign_dense(names, block.mlp.fc2, p + "mlp.fc2")
        assign_layer_norm(names, model.get_layer("encoder_norm"), "norm")
        if num_classes:
            assign_dense(names, model.get_layer("head"), "head")
        names.finish(model)

    return finish(ViT, folder, arch, overrides, place, load_weights)


def _resnet(folder, config, tensors, overrides, load_weights, arch_name):
    from keras_zoo.models.resnet import ResNet

    args = dict(config.get("model_args") or {})
    for key in ("num_classes", "global_pool"):
        if key in config:
            args.setdefault(key, config[key])
    _check_args(folder, arch_name, args, _RESNET_ARGS, _RESNET_FIXED)
    block_type, depths = _RESNETS[arch_name]
    depths = list(args.get("layers", depths))
    filters = list(args.get("channels", (64, 128, 256, 512)))
    cfg = config.get("pretrained_cfg") or {}
    image_size = _image_size(folder, args, cfg, 224)
    num_classes = args.get("num_classes", 1000) or None
    arch = {"block_type": block_type, "stage_depths": depths, "stage_filters": filters,
            "image_size": image_size, "num_channels": args.get("in_chans", 3),
            "num_classes": num_classes, "stem": "imagenet",
            # timm's 7x7 stem always has 64 channels (stem_width is for deep stems).
            "stem_width": None if filters[0] == 64 else 64,
            "preprocessing": _preprocessing(folder, cfg, image_size),
            "label_names": _label_names(config, num_classes)}

    def place(model):
        names = CheckpointTensors(tensors, f"timm {arch_name} checkpoint {folder!r}")
        names.assign(model.get_layer("stem_conv").kernel, "conv1.weight", conv_kernel)
        assign_batch_norm(names, model.get_layer("stem_bn"), "bn1")
        for s, depth in enumerate(depths):
            for b in range(depth):
                block, p = model.get_layer(f"stage{s + 1}_block{b + 1}"), f"layer{s + 1}.{b}."
                for i, (conv, bn) in enumerate(zip(block.convs, block.bns), start=1):
                    names.assign(conv.kernel, f"{p}conv{i}.weight", conv_kernel)
                    assign_batch_norm(names, bn, f"{p}bn{i}")
                if block.projection is not None:
                    names.assign(block.projection.kernel, p + "downsample.0.weight", conv_kernel)
                    assign_batch_norm(names, block.projection_bn, p + "downsample.1")
        if num_classes:
            assign_dense(names, model.get_layer("head"), "fc")
        names.finish(model)

    return finish(ResNet, folder, arch, overrides, place, load_weights)


@register_importer("timm")
def _timm(folder, config, tensors, overrides, load_weights):
    """Dispatches a timm folder on its ``architecture`` name."""
    name = config.get("architecture")
    if not isinstance(name, str):
        raise PresetError(f"{folder!r}: timm config.json 'architecture' must name a model, "
                          f"got {name!r}")
    vit = re.fullmatch(r"vit_(tiny|small|base|large)_patch(\d+)_(\d+)", name)
    if vit:
        return _vit(folder, config, tensors, overrides, load_weights, name, vit)
    if name in _RESNETS:
        return _resnet(folder, config, tensors, overrides, load_weights, name)
    raise PresetError(f"{folder!r} holds a timm {name!r} checkpoint; keras_zoo imports timm "
                      f"vit_{{tiny,small,base,large}}_patch<N>_<size> and {sorted(_RESNETS)}")
