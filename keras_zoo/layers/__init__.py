"""Reusable blocks, one concept per file."""

from keras_zoo.layers.activations import gelu, gelu_approximate
from keras_zoo.layers.attention import MultiHeadAttention, causal_mask
from keras_zoo.layers.conv_blocks import BasicBlock, BottleneckBlock
from keras_zoo.layers.embeddings import (
    ClassToken,
    LearnedPositionEmbedding,
    PatchEmbedding,
    PositionEmbedding,
    SinusoidalPositionEmbedding,
    TokenEmbedding,
    sincos_2d,
    sinusoidal_1d,
)
from keras_zoo.layers.feedforward import FeedForward
from keras_zoo.layers.masking import InsertMaskTokens, RandomPatchMasking
from keras_zoo.layers.normalization import BatchNormalization, LayerNormalization
from keras_zoo.layers.transformer import TransformerDecoderBlock, TransformerEncoderBlock

__all__ = [
    "BasicBlock", "BatchNormalization", "BottleneckBlock", "ClassToken", "FeedForward", "InsertMaskTokens",
    "LayerNormalization", "LearnedPositionEmbedding", "MultiHeadAttention", "PatchEmbedding",
    "PositionEmbedding", "RandomPatchMasking", "SinusoidalPositionEmbedding", "TokenEmbedding", "TransformerDecoderBlock", "TransformerEncoderBlock", "causal_mask",
    "gelu", "gelu_approximate", "sincos_2d", "sinusoidal_1d",
]
