"""Datasets (bundled, tfds, synthetic) and tf.data pipelines."""

from keras_zoo.data.datasets import (
    DatasetError,
    DatasetInfo,
    check_nonempty,
    load,
    load_arrays,
    parse_spec,
    pipeline,
    to_model_input,
)

__all__ = ["DatasetError", "DatasetInfo", "check_nonempty", "load", "load_arrays",
           "parse_spec", "pipeline", "to_model_input"]
