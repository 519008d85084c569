"""Writes the tiny vision checkpoints of tests/fixtures/hf_vision (run once, by hand).

    /work/torchenv/bin/python tools/make_hf_fixtures_vision.py

Needs torch, transformers and timm (the test suite needs none of them). Each
folder is what ``save_pretrained`` (transformers) or ``timm.models.save_for_hf``
(timm's Hub format: config.json with architecture / model_args /
pretrained_cfg, plus model.safetensors) writes for a random model of width
32, 2 blocks, 32 px images and 8 px patches (ResNets: 4-64 channels), its
parameters and BatchNorm statistics moved away from their initial values so
that an importer that skips, transposes or swaps a tensor fails. Beside them
``reference.npz``: float images in [0, 1], the model's outputs on them, raw
uint8 images, the checkpoint's own processor's output for those, and the
outputs on that.
"""

import os

import numpy as np
import timm
import torch
import transformers
from PIL import Image

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "hf_vision")
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
LABELS = {i: name for i, name in enumerate(["tench", "goldfish", "shark", "hen", "ostrich"])}

rng = np.random.default_rng(0)
UNIT = rng.random((2, 32, 32, 3)).astype("float32")           # model inputs in [0, 1]
RAW = rng.integers(0, 256, (2, 45, 37, 3), dtype=np.uint8)    # raw photos, any size


def perturb(model, skip=()):
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not any(s in name for s in skip):
                p.add_(0.2 * torch.randn_like(p))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.3 * torch.randn_like(b))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand_like(b))


def nchw(x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def normalised(x, mean, std):
    return (x - np.asarray(mean, "float32")) / np.asarray(std, "float32")


def save_hf(name, model, processor, outputs, raw_fn, **extra):
    folder = os.path.join(OUT, name)
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    # The reference is the PIL backend (what transformers 4 always ran, and what
    # timm's torchvision transforms run on PIL images); transformers 5's default
    # torchvision backend resamples uint8 photos differently (see the README).
    pil = getattr(transformers, type(processor).__name__ + "Pil").from_pretrained(folder)
    processed = pil(images=[Image.fromarray(r) for r in RAW], return_tensors="pt")
    default = processor(images=[Image.fromarray(r) for r in RAW], return_tensors="pt")
    print(f"{name}: torchvision vs PIL backend, max |difference| of normalised pixels "
          f"{float((default['pixel_values'] - processed['pixel_values']).abs().max()):.4f}")
    pixel_values = processed["pixel_values"]
    np.savez(os.path.join(folder, "reference.npz"), images=UNIT, raw_images=RAW,
             processed=nhwc(pixel_values), raw_outputs=raw_fn(pixel_values), **outputs, **extra)


def hf_vit():
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, image_size=32, patch_size=8, hidden_act="gelu")
    # google/vit-* classifier: LayerNorm eps 1e-12, mean = std = 0.5, bilinear resize.
    config = transformers.ViTConfig(**common, layer_norm_eps=1e-12, num_labels=5,
                                    id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    model = transformers.ViTForImageClassification(config).eval()
    perturb(model)
    processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32}, resample=2,
                                               image_mean=[0.5] * 3, image_std=[0.5] * 3)
    x = nchw(normalised(UNIT, [0.5] * 3, [0.5] * 3))
    with torch.no_grad():
        save_hf("vit_classifier", model, processor, {"logits": model(x).logits.numpy()},
                lambda pv: model(pv).logits.detach().numpy())

    # facebook/dino-vit* : a ViTModel without pooler, ImageNet mean/std, bicubic.
    config = transformers.ViTConfig(**common, layer_norm_eps=1e-6)
    model = transformers.ViTModel(config, add_pooling_layer=False).eval()
    perturb(model)
    processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32}, resample=3,
                                               image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    x = nchw(normalised(UNIT, IMAGENET_MEAN, IMAGENET_STD))
    with torch.no_grad():
        save_hf("vit_dino", model, processor,
                {"cls": model(x).last_hidden_state[:, 0].numpy(),
                 "tokens": model(x).last_hidden_state.numpy()},
                lambda pv: model(pv).last_hidden_state[:, 0].detach().numpy())

    # google/vit-*-in21k style ViTModel with its tanh pooler, and no q/k/v bias.
    config = transformers.ViTConfig(**common, layer_norm_eps=1e-12, qkv_bias=False)
    model = transformers.ViTModel(config).eval()
    perturb(model)
    processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32}, resample=2,
                                               image_mean=[0.5] * 3, image_std=[0.5] * 3)
    x = nchw(normalised(UNIT, [0.5] * 3, [0.5] * 3))
    with torch.no_grad():
        out = model(x)
        save_hf("vit_pooler_no_qkv_bias", model, processor,
                {"cls": out.last_hidden_state[:, 0].numpy(),
                 "pooler": out.pooler_output.numpy()},
                lambda pv: model(pv).last_hidden_state[:, 0].detach().numpy())


def hf_mae():
    config = transformers.ViTMAEConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=4,
        decoder_intermediate_size=32, image_size=32, patch_size=8, mask_ratio=0.75,
        norm_pix_loss=False, layer_norm_eps=1e-12)
    model = transformers.ViTMAEForPreTraining(config).eval()
    # transformers 5.25 leaves both fixed sin-cos tables at zero in a fresh model
    # (the pre-trained checkpoints hold the real tables): write them with its own code.
    model.vit.embeddings.patch_embeddings.projection._is_hf_initialized = False
    model.vit.embeddings.initialize_weights()
    model.decoder.initialize_weights(model.vit.embeddings.patch_embeddings.num_patches)
    assert float(model.vit.embeddings.position_embeddings.abs().max()) > 0.5
    assert float(model.decoder.decoder_pos_embed.abs().max()) > 0.5
    perturb(model, skip=("position_embeddings", "decoder_pos_embed"))  # fixed sin-cos tables
    processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32}, resample=3,
                                               image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    x = nchw(normalised(UNIT, IMAGENET_MEAN, IMAGENET_STD))
    noise = torch.from_numpy(rng.random((2, 16)).astype("float32"))
    with torch.no_grad():
        out = model(x, noise=noise)
        masked = model.vit(x, noise=noise).last_hidden_state.numpy()
        model.config.mask_ratio = 0.0  # read at call time: every patch, in order
        unmasked = model.vit(x, noise=torch.arange(16.0).expand(2, 16)).last_hidden_state
        model.config.mask_ratio = 0.75
        save_hf("vit_mae", model, processor,
                {"noise": noise.numpy(), "logits": out.logits.numpy(), "mask": out.mask.numpy(),
                 "encoded_visible": masked, "encoded": unmasked.numpy()},
                lambda pv: model(pv, noise=noise).logits.detach().numpy())


def hf_resnet():
    for name, layer_type, hidden in (("resnet_bottleneck", "bottleneck", [16, 32, 32, 64]),
                                     ("resnet_basic", "basic", [8, 16, 16, 32])):
        config = transformers.ResNetConfig(
            embedding_size=hidden[0] // (4 if layer_type == "bottleneck" else 1),
            hidden_sizes=hidden, depths=[2, 1, 2, 1], layer_type=layer_type,
            hidden_act="relu", downsample_in_first_stage=False, num_labels=5,
            id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
        model = transformers.ResNetForImageClassification(config).eval()
        perturb(model)
        # microsoft/resnet-50: ConvNextImageProcessor, shorter side 224 / 0.875, centre crop.
        processor = transformers.ConvNextImageProcessor(
            size={"shortest_edge": 32}, crop_pct=0.875, resample=3,
            image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
        x = nchw(normalised(UNIT, IMAGENET_MEAN, IMAGENET_STD))
        with torch.no_grad():
            save_hf(name, model, processor, {"logits": model(x).logits.numpy()},
                    lambda pv: model(pv).logits.detach().numpy())


def save_timm(name, model):
    folder = os.path.join(OUT, name)
    os.makedirs(folder, exist_ok=True)
    timm.models.save_for_hf(model, folder, safe_serialization=True)
    config = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(**config)
    processed = torch.stack([transform(Image.fromarray(r)) for r in RAW])
    x = nchw(normalised(UNIT, config["mean"], config["std"]))
    with torch.no_grad():
        np.savez(os.path.join(folder, "reference.npz"), images=UNIT, raw_images=RAW,
                 logits=model(x).numpy(), processed=nhwc(processed),
                 raw_outputs=model(processed).numpy())


def timm_models():
    vit = timm.create_model("vit_base_patch16_224.augreg_in21k_ft_in1k", pretrained=False,
                            img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4,
                            mlp_ratio=2.0, num_classes=5).eval()
    perturb(vit)
    vit.pretrained_cfg["input_size"] = (3, 32, 32)
    save_timm("timm_vit", vit)
    resnet = timm.create_model("resnet50.a1_in1k", pretrained=False, layers=[2, 1, 2, 1],
                               channels=[4, 8, 8, 16], stem_width=4, num_classes=5).eval()
    perturb(resnet)
    resnet.pretrained_cfg["input_size"] = (3, 32, 32)
    save_timm("timm_resnet", resnet)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    hf_vit()
    hf_mae()
    hf_resnet()
    timm_models()
    for root, _, files in sorted(os.walk(OUT)):
        for f in sorted(files):
            path = os.path.join(root, f)
            print(f"{os.path.getsize(path):>9,}  {os.path.relpath(path, OUT)}")
    print("transformers", transformers.__version__, "timm", timm.__version__,
          "torch", torch.__version__)
