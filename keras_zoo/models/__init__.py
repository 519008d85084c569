"""One file per family; importing this package registers every family and preset."""

from keras_zoo.models.autoencoder import Autoencoder, SparseAutoencoder
from keras_zoo.models.base import ZooModel
from keras_zoo.models.bert import BERT
from keras_zoo.models.dino import DINO
from keras_zoo.models.gpt import GPT
from keras_zoo.models.latent_classifier import LatentClassifier
from keras_zoo.models.lenet import LeNet
from keras_zoo.models.mae import MAE
from keras_zoo.models.mamba import Mamba
from keras_zoo.models.mlp import MLP
from keras_zoo.models.resnet import ResNet
from keras_zoo.models.simba import Simba
from keras_zoo.models.transformer import Transformer
from keras_zoo.models.vae import VAE
from keras_zoo.models.vit import ViT

__all__ = ["BERT", "DINO", "GPT", "MAE", "MLP", "VAE", "Autoencoder", "LatentClassifier", "LeNet",
           "Mamba", "ResNet", "Simba", "SparseAutoencoder", "Transformer", "ViT", "ZooModel"]
