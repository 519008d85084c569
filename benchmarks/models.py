"""The models the benchmarks compare, built the same way for every implementation.

Each architecture has a full config (the published one, at 224x224) and a
``--quick`` config (32x32, tiny widths) used only by the smoke test. Peers are
built from config with random weights (no download): keras-hub's
``ViTBackbone`` / ``ResNetBackbone`` under their image classifiers, and timm's
``VisionTransformer`` / ``ResNet`` classes.
"""

from benchmarks import common

CONFIGS = {
    # ViT-S/16 (DeiT-S widths): 22.05 M parameters, 4.6 GMACs at 224.
    "vit": {"image_size": 224, "patch_size": 16, "hidden_dim": 384, "num_layers": 12,
            "num_heads": 6, "mlp_dim": 1536, "num_classes": 1000},
    # ResNet-50 (v1.5): 25.56 M parameters, 4.1 GMACs at 224.
    "resnet": {"image_size": 224, "stage_depths": [3, 4, 6, 3],
               "stage_filters": [64, 128, 256, 512], "num_classes": 1000},
}
QUICK_CONFIGS = {
    "vit": {"image_size": 32, "patch_size": 8, "hidden_dim": 64, "num_layers": 2,
            "num_heads": 4, "mlp_dim": 128, "num_classes": 10},
    # keras-hub's ResNetBackbone insists on a 64-wide first stage.
    "resnet": {"image_size": 32, "stage_depths": [1, 1, 1, 1],
               "stage_filters": [64, 64, 64, 64], "num_classes": 10},
}
DISPLAY = {"vit": "ViT-S/16", "resnet": "ResNet-50"}
ARCHITECTURES = tuple(CONFIGS)
IMPLEMENTATIONS = ("keras_zoo", "keras_hub", "timm")
# What ``compile()`` gives without options: "auto", which Keras resolves to
# False (no XLA) on a CPU-only machine. ``--variants all`` adds XLA (True).
DEFAULT_JIT = "auto"


def config_for(arch, quick):
    return dict((QUICK_CONFIGS if quick else CONFIGS)[arch])


def display_name(arch, quick):
    return DISPLAY[arch] + (" (quick)" if quick else "")


def forward_flops(arch, config):
    """Analytic forward FLOPs for one image of ``config``."""
    if arch == "vit":
        return common.vit_forward_flops(
            config["image_size"], config["patch_size"], config["hidden_dim"],
            config["num_layers"], config["mlp_dim"], config["num_classes"])
    return common.resnet_forward_flops(
        config["image_size"], config["stage_depths"], config["stage_filters"],
        "bottleneck", config["num_classes"])


def build_keras(impl, arch, config):
    """A keras_zoo or keras-hub classifier (logits) for ``config``."""
    s = config["image_size"]
    if impl == "keras_zoo":
        from keras_zoo import ResNet, ViT

        if arch == "vit":
            return ViT(**config)
        return ResNet(block_type="bottleneck", **config)
    if impl != "keras_hub":
        raise ValueError(f"unknown Keras implementation {impl!r}; expected keras_zoo or keras_hub")
    import keras_hub

    if arch == "vit":
        backbone = keras_hub.models.ViTBackbone(
            image_shape=(s, s, 3), patch_size=config["patch_size"],
            num_layers=config["num_layers"], num_heads=config["num_heads"],
            hidden_dim=config["hidden_dim"], mlp_dim=config["mlp_dim"])
        return keras_hub.models.ViTImageClassifier(backbone=backbone,
                                                   num_classes=config["num_classes"])
    depths, filters = config["stage_depths"], config["stage_filters"]
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[filters[0]], input_conv_kernel_sizes=[7],
        stackwise_num_filters=list(filters), stackwise_num_blocks=list(depths),
        stackwise_num_strides=[1, 2, 2, 2], block_type="bottleneck_block",
        image_shape=(s, s, 3))
    return keras_hub.models.ResNetImageClassifier(backbone=backbone,
                                                  num_classes=config["num_classes"])


def build_timm(arch, config):
    """timm's model of ``config`` (NCHW, random weights)."""
    from timm.models import resnet, vision_transformer

    if arch == "vit":
        return vision_transformer.VisionTransformer(
            img_size=config["image_size"], patch_size=config["patch_size"],
            embed_dim=config["hidden_dim"], depth=config["num_layers"],
            num_heads=config["num_heads"], mlp_ratio=config["mlp_dim"] / config["hidden_dim"],
            num_classes=config["num_classes"])
    filters = tuple(config["stage_filters"])
    return resnet.ResNet(resnet.Bottleneck, layers=tuple(config["stage_depths"]),
                         channels=filters, stem_width=filters[0],
                         num_classes=config["num_classes"])


def keras_parameter_count(model):
    return int(sum(int(w.numpy().size) for w in model.trainable_weights))


def torch_parameter_count(model):
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))
