"""keras_zoo: readable Keras 3 models that train on a laptop or a TPU pod and export to TFLite.

    import keras_zoo
    model = keras_zoo.ViT.from_preset("vit_small_patch16_224", num_classes=10)
    keras_zoo.list_presets()
"""

from keras_zoo.models import (
    BERT,
    DINO,
    GPT,
    MAE,
    MLP,
    VAE,
    Autoencoder,
    LatentClassifier,
    LeNet,
    Mamba,
    ResNet,
    Simba,
    SparseAutoencoder,
    Transformer,
    ViT,
    ZooModel,
)
from keras_zoo.preprocessing import preprocess_images
from keras_zoo.presets import PresetError, list_presets

__version__ = "0.1.0"


def from_preset(preset, load_weights=True, **overrides):
    """Builds any family's model from a preset name or folder."""
    return ZooModel.from_preset(preset, load_weights=load_weights, **overrides)


__all__ = ["BERT", "DINO", "GPT", "MAE", "MLP", "VAE", "Autoencoder", "LatentClassifier", "LeNet",
           "Mamba", "PresetError", "ResNet", "Simba", "SparseAutoencoder", "Transformer", "ViT",
           "ZooModel",
           "from_preset", "list_presets", "preprocess_images"]
