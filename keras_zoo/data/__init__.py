"""Datasets (bundled, tfds, synthetic; images and text), tokenizers, tf.data pipelines."""

from keras_zoo.data.datasets import (
    DatasetError,
    DatasetInfo,
    check_nonempty,
    image_batches,
    load,
    load_arrays,
    load_images,
    num_classes_of,
    parse_spec,
    pipeline,
    to_model_input,
)
from keras_zoo.data.text import TextInfo, is_text_spec

__all__ = ["DatasetError", "DatasetInfo", "TextInfo", "check_nonempty", "image_batches",
           "is_text_spec", "load", "load_arrays", "load_images", "num_classes_of",
           "parse_spec", "pipeline", "to_model_input"]
