"""Converters for foreign checkpoints; importing this package registers them
with ``keras_zoo.presets`` (which imports it lazily, on the first foreign folder)."""

from keras_zoo.converters import (
    hf_bert,  # noqa: F401  (registers hf: BertModel, BertForPreTraining)
    hf_gpt2,  # noqa: F401  (hf: GPT2LMHeadModel, GPT2Model)
    hf_marian,  # noqa: F401  (hf: MarianMTModel, MarianTokenizer)
    hf_timm,  # noqa: F401  (hf: timm ViT and ResNet folders)
    hf_vision,  # noqa: F401  (hf: ViT, ViTMAE, ResNet classifiers and backbones)
    huggingface,  # noqa: F401  (hf: folders, HuggingFaceTokenizer)
    keras_hub,  # noqa: F401  (registers ViT, ResNet)
)
