"""Import of keras-hub ViT and ResNet checkpoints into keras_zoo models.

A folder written by keras-hub's ``save_to_preset`` (``config.json`` naming a
keras-hub class, ``model.weights.h5``, optionally ``task.json`` +
``task.weights.h5`` for an image classifier and ``image_converter.json`` for
its preprocessing) becomes a keras_zoo model with the same numbers::

    vit = keras_zoo.ViT.from_preset("/path/to/keras_hub_vit_preset")
    resnet = keras_zoo.ResNet.from_preset("/path/to/keras_hub_resnet", num_classes=10)

The keras-hub model is loaded with keras-hub's own loader (so sharded weight
files and dtype policies are handled by the library that wrote them); each of
its weights is then mapped into the keras_zoo layer that plays the same part,
and the converter fails if any weight on either side is left unmapped.

What the converted model returns without overrides:

* ``ViTBackbone``: ``pooling=None``, ``num_classes=None`` - the token sequence
  after the final LayerNorm, exactly what ``ViTBackbone`` returns.
* ``ResNetBackbone``: ``num_classes=None`` - the global average of the last
  feature map, i.e. what keras-hub's ``ResNetImageClassifier(pooling="avg")``
  feeds its classifier (the map itself is the input of our ``avg_pool`` layer).
* A folder saved from a ``ViTImageClassifier`` / ``ResNetImageClassifier``
  also brings its classifier: our ``head`` gets the keras-hub ``predictions``
  weights, so the model returns the same logits.

``overrides`` work as for our own presets: ``num_classes=10`` puts a fresh
head on the hub features (ViT then pools the CLS token), ``image_size=...``
resamples ViT's position embeddings (ResNet convolutions do not depend on it).

keras-hub models do not scale their inputs; its image converter does. A
folder with an ``image_converter.json`` gives the converted model that scaling
as its ``preprocessing`` (``preprocessing_of``), so it takes [0, 1] images
like every keras_zoo vision model; without one, the model takes what the
keras-hub backbone took.
"""

import collections
import logging
import os

import numpy as np

from keras_zoo.models.resnet import ResNet
from keras_zoo.models.vit import ViT
from keras_zoo.presets import (
    PresetError,
    check_overrides,
    read_json,
    register_converter,
    transfer_weights,
)

log = logging.getLogger("keras_zoo")

TASK_FILE = "task.json"
IMAGE_CONVERTER_FILE = "image_converter.json"


# ---------------------------------------------------------------- public helpers

def input_scaling(folder):
    """The preprocessing a keras-hub preset folder declares, or None.

    Returns ``{"image_size": (h, w), "scale": ..., "offset": ...}`` from its
    ``image_converter.json``: inputs in [0, 255] must become ``x * scale +
    offset`` (per channel when lists) before they reach the model. keras-hub's
    ImageNet ResNets (converted from timm) use the ImageNet mean/std, i.e.
    ``scale = 1 / (255 * std)``, ``offset = -mean / std``; its ViTs (converted
    from Hugging Face ``google/vit-*``) map [0, 255] to [-1, 1]
    (``scale = 1 / 127.5``, ``offset = -1``).
    """
    path = os.path.join(str(folder), IMAGE_CONVERTER_FILE)
    if not os.path.exists(path):
        return None
    config = read_json(path).get("config", {})
    size = config.get("image_size")
    return {"image_size": tuple(size) if size else None,
            "scale": config.get("scale"), "offset": config.get("offset")}


def preprocessing_of(folder, image_size, channels):
    """The folder's ``image_converter.json`` as a keras_zoo ``preprocessing``
    spec (``keras_zoo.preprocessing``), or None. keras-hub maps [0, 255]
    pixels to ``x * scale + offset``; on our [0, 1] inputs that is
    ``(x - mean) / std`` with ``std = 1 / (255 * scale)`` and ``mean = -offset
    * std``, applied in the model's graph. Its resize (``crop_to_aspect_ratio``:
    the largest centred square, then the size) is recorded as a shorter-side
    resize and a centre crop."""
    scaling = input_scaling(folder)
    if scaling is None:
        return None
    config = read_json(os.path.join(str(folder), IMAGE_CONVERTER_FILE)).get("config", {})

    def per_channel(value, default):
        value = default if value is None else value
        values = list(value) if isinstance(value, (list, tuple)) else [value] * channels
        if len(values) != channels:
            raise PresetError(f"{folder!r}: {IMAGE_CONVERTER_FILE} has {values} for "
                              f"{channels} channels")
        return np.asarray(values, "float64")

    scale, offset = per_channel(scaling["scale"], 1.0), per_channel(scaling["offset"], 0.0)
    if not np.all(scale > 0):
        raise PresetError(f"{folder!r}: {IMAGE_CONVERTER_FILE} scale {scaling['scale']} "
                          "must be positive")
    std = 1.0 / (255.0 * scale)
    crop = config.get("crop_to_aspect_ratio", True)
    return {"mean": [float(v) for v in -offset * std], "std": [float(v) for v in std],
            "resize": "shorter_side" if crop else "exact", "resize_size": image_size,
            "crop": "center" if crop else None, "crop_rounding": "floor",
            "interpolation": config.get("interpolation", "bilinear"),
            "source": "keras-hub " + IMAGE_CONVERTER_FILE}


# ---------------------------------------------------------------- config mapping

def _unsupported(class_name, option, value, why):
    return PresetError(
        f"keras-hub {class_name} with {option}={value!r} cannot be imported: {why}")


def _square(class_name, option, value):
    """(h, w) or int -> int; non-square sizes are not expressible in keras_zoo."""
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise _unsupported(class_name, option, list(value),
                               "keras_zoo models take square sizes only")
        value = value[0]
    return value


def _image_shape(class_name, config, default_size):
    shape = config.get("image_shape") or (None, None, 3)
    if len(shape) != 3:
        raise _unsupported(class_name, "image_shape", shape, "expected (height, width, channels)")
    h, w, c = shape
    if h is None and w is None:
        h = w = default_size
    size = _square(class_name, "image_shape[:2]", [h, w])
    if size is None:
        raise _unsupported(class_name, "image_shape", shape,
                           "height and width must both be set or both be None")
    return size, c if c is not None else 3


def vit_config(hub):
    """keras-hub ``ViTBackbone`` config -> (architecture, training-only) ViT kwargs."""
    name = "ViTBackbone"
    for option, why in [
        ("use_class_token", "keras_zoo's ViT always prepends a [CLS] token"),
        ("use_mha_bias", "keras_zoo's ViT always has q/k/v/output projection biases"),
        ("use_mlp_bias", "keras_zoo's ViT always has biases in the MLP"),
        ("use_patch_bias", "keras_zoo's ViT always has a bias in the patch projection"),
    ]:
        if not hub.get(option, True):
            raise _unsupported(name, option, hub[option], why)
    image_size, channels = _image_shape(name, hub, None)
    arch = {"image_size": image_size,
            "patch_size": _square(name, "patch_size", hub["patch_size"]),
            "num_channels": channels, "hidden_dim": hub["hidden_dim"],
            "num_layers": hub["num_layers"], "num_heads": hub["num_heads"],
            "mlp_dim": hub["mlp_dim"],
            "layer_norm_epsilon": hub.get("layer_norm_epsilon", 1e-6)}
    training = {"dropout": hub.get("dropout_rate", 0.0),
                "attention_dropout": hub.get("attention_dropout", 0.0)}
    return arch, training


# keras-hub block type -> (our block_type, avg_down)
_RESNET_BLOCKS = {"basic_block": ("basic", False), "bottleneck_block": ("bottleneck", False),
                  "basic_block_vd": ("basic", True), "bottleneck_block_vd": ("bottleneck", True)}


def resnet_config(hub):
    """keras-hub ``ResNetBackbone`` config -> (architecture, training-only) ResNet kwargs."""
    name = "ResNetBackbone"
    block = hub["block_type"]
    if block not in _RESNET_BLOCKS:
        raise _unsupported(name, "block_type", block, f"expected one of {sorted(_RESNET_BLOCKS)}")
    block_type, avg_down = _RESNET_BLOCKS[block]
    preactivation = bool(hub.get("use_pre_activation", False))
    if avg_down and preactivation:
        # keras-hub's vd blocks skip the average pool on the pre-activated shortcut,
        # which does not even fit a strided block; there is no such checkpoint.
        raise _unsupported(name, "use_pre_activation", True, f"not with block_type={block!r}")
    stage_filters = list(hub["stackwise_num_filters"])
    f = stage_filters[0]
    stems = {(7,): ((f,), "imagenet"), (3, 3, 3): ((f // 2, f // 2, f), "deep")}
    filters, kernels = tuple(hub["input_conv_filters"]), tuple(hub["input_conv_kernel_sizes"])
    if kernels not in stems:
        raise _unsupported(name, "input_conv_kernel_sizes", list(kernels),
                           "keras_zoo's stems are [7] (imagenet) and [3, 3, 3] (deep)")
    if stems[kernels][0] != filters:
        raise _unsupported(name, "input_conv_filters", list(filters),
                           f"with these kernels keras_zoo's stem has {list(stems[kernels][0])} "
                           f"filters for a first stage of width {f}")
    strides = list(hub["stackwise_num_strides"])
    expected = [1] + [2] * (len(strides) - 1)
    if strides != expected:
        raise _unsupported(name, "stackwise_num_strides", strides,
                           f"keras_zoo's ResNet uses {expected}")
    # keras-hub ResNets accept any image size; 224 is what its ImageNet presets use.
    image_size, channels = _image_shape(name, hub, 224)
    arch = {"block_type": block_type,
            "stage_depths": list(hub["stackwise_num_blocks"]), "stage_filters": stage_filters,
            "image_size": image_size, "num_channels": channels, "stem": stems[kernels][1],
            "preactivation": preactivation, "avg_down": avg_down}
    return arch, {}


# ---------------------------------------------------------------- weight mapping

class _WeightMap:
    """Assigns keras-hub variables to keras_zoo variables and remembers which
    ones it used, so that a variant the mapping does not know fails loudly
    instead of leaving random weights behind."""

    def __init__(self):
        self.used_src, self.used_dst = set(), set()

    def assign(self, dst, src, transform=None):
        srcs = src if isinstance(src, (list, tuple)) else [src]
        values = [np.asarray(s.numpy() if hasattr(s, "numpy") else s) for s in srcs]
        value = transform(*values) if transform else values[0]
        if tuple(dst.shape) != value.shape:
            raise PresetError(
                f"keras-hub weight(s) {[s.path for s in srcs]} of shape {value.shape} do "
                f"not fit keras_zoo weight {dst.path} of shape {tuple(dst.shape)}")
        dst.assign(value.astype(dst.dtype))
        self.used_src.update(id(s) for s in srcs)
        self.used_dst.add(id(dst))

    def layer(self, dst, src):
        """Same-kind layers (Conv2D, Dense, LayerNorm, BatchNorm): weights in order."""
        if [w.name for w in dst.weights] != [w.name for w in src.weights]:
            raise PresetError(f"keras-hub layer {src.name!r} has weights "
                              f"{[w.name for w in src.weights]}, keras_zoo layer "
                              f"{dst.name!r} has {[w.name for w in dst.weights]}")
        for d, s in zip(dst.weights, src.weights):
            self.assign(d, s)

    def check_complete(self, src_model, dst_model, skip=()):
        missing_src = [w.path for w in src_model.weights if id(w) not in self.used_src]
        missing_dst = [w.path for w in dst_model.weights
                       if id(w) not in self.used_dst and w.path.split("/")[0] not in skip]
        if missing_src or missing_dst:
            raise PresetError(
                "keras-hub checkpoint does not map one-to-one onto keras_zoo's "
                f"{type(dst_model).__name__}: unmapped keras-hub weights "
                f"{missing_src[:5]}, unmapped keras_zoo weights {missing_dst[:5]}")


def map_vit(hub, zoo):
    """keras-hub ViTBackbone -> keras_zoo ViT (head excluded)."""
    m = _WeightMap()
    emb = hub.get_layer("vit_patching_and_embedding")
    m.layer(zoo.get_layer("patch_embedding").projection, emb.patch_embedding)
    m.assign(zoo.get_layer("class_token").token, emb.class_token)
    m.assign(zoo.get_layer("position_embedding").embedding,
             emb.position_embedding.embeddings, lambda e: e[None])
    encoder = hub.get_layer("vit_encoder")
    for i, block in enumerate(encoder.encoder_layers):
        ours = zoo.get_layer(f"encoder_block_{i}")
        mha, attn = block.mha, ours.attention
        m.layer(ours.attention_norm, block.layer_norm_1)
        # keras-hub keeps separate (dim, heads, head_dim) q/k/v kernels; ours is one
        # (dim, 3 * dim) matmul whose columns are [q | k | v], each head-major.
        q, k, v = mha.query_dense, mha.key_dense, mha.value_dense
        m.assign(attn.qkv.kernel, [q.kernel, k.kernel, v.kernel],
                 lambda *ws: np.concatenate([w.reshape(w.shape[0], -1) for w in ws], 1))
        m.assign(attn.qkv.bias, [q.bias, k.bias, v.bias],
                 lambda *bs: np.concatenate([b.reshape(-1) for b in bs]))
        out = mha.output_dense
        m.assign(attn.out.kernel, out.kernel, lambda w: w.reshape(-1, w.shape[-1]))
        m.assign(attn.out.bias, out.bias)
        m.layer(ours.mlp_norm, block.layer_norm_2)
        m.layer(ours.mlp.fc1, block.mlp.dense_1)
        m.layer(ours.mlp.fc2, block.mlp.dense_2)
    m.layer(zoo.get_layer("encoder_norm"), encoder.layer_norm)
    m.check_complete(hub, zoo, skip=("head",))


def map_resnet(hub, zoo):
    """keras-hub ResNetBackbone (v1, v2 or vd) -> keras_zoo ResNet (head excluded)."""
    m = _WeightMap()
    hub_names = {layer.name for layer in hub.layers}
    config = zoo.get_zoo_config()
    preactivation = config["preactivation"]
    # keras-hub numbers its stem conv{i}_conv / conv{i}_bn from 1.
    names = {"stem_conv": "conv1_conv", "stem_bn": "conv1_bn"}
    if config["stem"] == "deep":
        names = {f"stem_{kind}{i}": f"conv{i}_{kind}" for i in (1, 2, 3) for kind in ("conv", "bn")}
    if preactivation:
        names["post_bn"] = "post_bn"
    zoo_names = {layer.name for layer in zoo.layers}
    for zoo_name, hub_name in names.items():
        if zoo_name in zoo_names:  # v2 has no BN after the last stem conv
            m.layer(zoo.get_layer(zoo_name), hub.get_layer(hub_name))
    for s, depth in enumerate(zoo.get_zoo_config()["stage_depths"]):
        for b in range(depth):
            ours = zoo.get_layer(f"stage{s + 1}_block{b + 1}")
            prefix = f"stack{s}_block{b}"
            if preactivation:
                m.layer(ours.preact_bn, hub.get_layer(f"{prefix}_pre_activation_bn"))
            for i, (conv, bn) in enumerate(zip(ours.convs, ours.bns), start=1):
                m.layer(conv, hub.get_layer(f"{prefix}_{i}_conv"))
                if bn is not None:  # v2 has no BN after a block's last conv
                    m.layer(bn, hub.get_layer(f"{prefix}_{i}_bn"))
            hub_projects = f"{prefix}_0_conv" in hub_names
            if hub_projects != (ours.projection is not None):
                raise PresetError(
                    f"keras-hub block {prefix} {'has' if hub_projects else 'has no'} a "
                    f"projection shortcut, keras_zoo's {ours.name} "
                    f"{'has none' if hub_projects else 'has one'}")
            if hub_projects:
                m.layer(ours.projection, hub.get_layer(f"{prefix}_0_conv"))
                if not preactivation:
                    m.layer(ours.projection_bn, hub.get_layer(f"{prefix}_0_bn"))
    m.check_complete(hub, zoo, skip=("head",))


# ---------------------------------------------------------------- the converters

def _classifier_task(folder, task_class, head_ok):
    """The keras-hub task config if ``folder`` holds a classifier whose head
    keras_zoo can express, else None (the backbone alone is imported)."""
    path = os.path.join(folder, TASK_FILE)
    if not os.path.exists(path):
        return None
    task = read_json(path)
    config = task.get("config", {})
    if task.get("class_name") != task_class:
        log.info("%s holds a keras-hub %s; importing its backbone only",
                 folder, task.get("class_name"))
        return None
    problem = head_ok(config)
    if problem:
        log.warning("keras-hub %s head not imported (%s); the backbone is", task_class, problem)
        return None
    if config.get("activation") not in (None, "linear"):
        log.warning("keras-hub %s applies activation=%r to its logits; keras_zoo's head "
                    "returns logits", task_class, config["activation"])
    return config


def _vit_head_ok(config):
    if config.get("pooling", "token") != "token":
        # keras-hub's "gap" averages the CLS token too; ours averages patch tokens only.
        return f"pooling={config.get('pooling')!r}"
    if config.get("intermediate_dim") is not None:
        return f"intermediate_dim={config['intermediate_dim']} (tanh pre-logits layer)"
    return None


def _resnet_head_ok(config):
    if config.get("pooling", "avg") != "avg":
        return f"pooling={config.get('pooling')!r}"
    return None


def _load_keras_hub(folder, with_task):
    import keras_hub  # heavy; only needed when weights are really imported

    try:
        if with_task:
            task = keras_hub.models.ImageClassifier.from_preset(folder)
            return task.backbone, task
        return keras_hub.models.Backbone.from_preset(folder), None
    except Exception as e:  # keras-hub / h5py raise many types for a bad folder
        raise PresetError(
            f"keras-hub could not load {folder!r}: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}") from e


# How one keras-hub family becomes one of ours: config mapping, weight mapping,
# and the classifier task whose head we can take over.
_Spec = collections.namedtuple("_Spec", "family hub_class arch_fn map_fn task_class head_ok")


def _convert(folder, overrides, load_weights, spec):
    family = spec.family
    hub_config = read_json(os.path.join(folder, "config.json")).get("config", {})
    try:
        arch, training = spec.arch_fn(hub_config)
    except KeyError as e:
        raise PresetError(f"{folder!r}: keras-hub {spec.hub_class} config lacks {e}") from None
    check_overrides(family, overrides)
    task = _classifier_task(folder, spec.task_class, spec.head_ok)
    defaults = {**training, "num_classes": task["num_classes"] if task else None,
                "preprocessing": preprocessing_of(folder, arch["image_size"],
                                                  arch["num_channels"])}
    if family is ViT:
        # A bare ViTBackbone returns the token sequence; a head needs the CLS token.
        defaults["pooling"] = "token" if task or overrides.get("num_classes") else None
    target_config = {**arch, **defaults, **overrides}
    if not load_weights:
        return family(**target_config)

    hub, hub_task = _load_keras_hub(folder, with_task=task is not None)
    # Built with the checkpoint's own architecture values, so every weight fits;
    # architecture overrides (image_size) are applied by transfer_weights below.
    source_config = {**target_config, **arch}
    source = family(**source_config)
    spec.map_fn(hub, source)
    # The hub ViT head reads the CLS token; under another pooling it would not fit.
    if hub_task is not None and source_config.get("pooling", "token") == "token":
        _import_head(hub_task, source)
    if source_config == target_config:
        return source
    target = family(**target_config)
    transfer_weights(source, target)
    return target


def _import_head(hub_task, zoo):
    head = zoo.get_layer("head") if any(layer.name == "head" for layer in zoo.layers) else None
    dense = hub_task.output_dense
    if head is None or tuple(head.kernel.shape) != tuple(dense.kernel.shape):
        log.info("keras-hub classifier head %s not used: the model's head is %s",
                 tuple(dense.kernel.shape), None if head is None else tuple(head.kernel.shape))
        return
    m = _WeightMap()
    m.layer(head, dense)


_VIT = _Spec(ViT, "ViTBackbone", vit_config, map_vit, "ViTImageClassifier", _vit_head_ok)
_RESNET = _Spec(ResNet, "ResNetBackbone", resnet_config, map_resnet, "ResNetImageClassifier",
                _resnet_head_ok)


def convert_vit(folder, overrides, load_weights=True):
    """keras-hub ``ViTBackbone`` (or ``ViTImageClassifier``) folder -> ``keras_zoo.ViT``."""
    return _convert(folder, overrides, load_weights, _VIT)


def convert_resnet(folder, overrides, load_weights=True):
    """keras-hub ``ResNetBackbone`` (or ``ResNetImageClassifier``) folder -> ``keras_zoo.ResNet``."""
    return _convert(folder, overrides, load_weights, _RESNET)


register_converter("ViTBackbone", convert_vit)
register_converter("ResNetBackbone", convert_resnet)
