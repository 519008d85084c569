"""Converters for foreign checkpoints; importing this package registers them
with ``keras_zoo.presets`` (which imports it lazily, on the first foreign folder)."""

# hf_gpt2: GPT2LMHeadModel, GPT2Model (hf: folders); keras_hub: ViT, ResNet.
from keras_zoo.converters import hf_gpt2, keras_hub  # noqa: F401
