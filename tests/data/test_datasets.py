import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_zoo import data
from keras_zoo.data import DatasetError, parse_spec


def test_bundled_digits_splits_are_fixed_and_disjoint():
    x_train, y_train, info = data.load_arrays("digits", "train", 8, 1)
    x_test, y_test, test_info = data.load_arrays("digits:test", "train", 8, 1)
    assert (len(x_train), len(x_test)) == (1257, 360)  # 180 of the 1,437 are validation
    assert info.num_classes == 10 and test_info.split == "test"
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert set(np.unique(y_test)) == set(range(10))
    # No test image appears in the training split.
    train_rows = {row.tobytes() for row in x_train.reshape(len(x_train), -1)}
    overlap = sum(row.tobytes() in train_rows for row in x_test.reshape(len(x_test), -1))
    assert overlap == 0


def test_pipeline_static_batches_and_shapes():
    ds, _ = data.load("digits")
    batches = data.pipeline(ds, 64, 32, 1, training=True)
    spec = batches.element_spec
    assert spec[0].shape == (64, 32, 32, 1) and spec[1].shape == (64,)
    n = sum(1 for _ in batches)
    assert n == 1257 // 64  # drop_remainder: a full batch or none


def test_pipeline_maps_grey_to_rgb():
    ds, _ = data.load("digits:test")
    x, _ = next(iter(data.pipeline(ds, 8, 16, 3, training=False)))
    assert x.shape == (8, 16, 16, 3)
    np.testing.assert_allclose(x[..., 0], x[..., 2])


def test_tfds_names_through_the_same_pipeline():
    with tfds.testing.mock_data(num_examples=16):
        ds, info = data.load("tfds:mnist:test")
        assert (info.name, info.split, info.num_classes) == ("mnist", "test", 10)
        x, y = next(iter(data.pipeline(ds, 8, 32, 1, training=True)))
        assert x.shape == (8, 32, 32, 1) and x.dtype == tf.float32
        assert float(tf.reduce_max(x)) <= 1.0 and y.shape == (8,)
        ds, info = data.load("tfds:cifar10")
        x, _ = next(iter(data.pipeline(ds, 4, 32, 1, training=False)))
        assert info.image_shape == (32, 32, 3) and x.shape == (4, 32, 32, 1)


def test_synthetic_dataset_takes_model_shapes():
    ds, info = data.load("synthetic:10", image_shape=(16, 16, 3), num_classes=4)
    x, y = next(iter(ds.batch(10)))
    assert x.shape == (10, 16, 16, 3) and int(tf.reduce_max(y)) < 4 and info.num_examples == 10


@pytest.mark.parametrize("spec, message", [
    ("digit", "unknown dataset 'digit'.*Did you mean digits"),
    ("digits:valid", "bundled split must be one of .*got .valid."),
    ("tfds:", "tfds:NAME"),
    ("synthetic:many", "whole number"),
    ("", "non-empty string"),
])
def test_bad_specs_are_named(spec, message):
    with pytest.raises(DatasetError, match=message):
        data.load(spec)


def test_unknown_tfds_name():
    with pytest.raises(DatasetError, match="tfds dataset 'not_a_dataset' not found"):
        data.load("tfds:not_a_dataset")


def test_empty_dataset_is_reported():
    ds, _ = data.load("synthetic:3", image_shape=(8, 8, 1))
    batches = data.pipeline(ds, 4, 8, 1, training=False)
    with pytest.raises(DatasetError, match="yields no full batch of 4"):
        data.check_nonempty(batches, "synthetic:3", 4)


@pytest.mark.parametrize("spec, message", [
    ("synthetic:-5", "synthetic:N needs a positive whole number of examples, got '-5'"),
    ("synthetic:0", "synthetic:N needs a positive whole number of examples, got '0'"),
    ("synthetic:ten", "synthetic:N needs a positive whole number of examples, got 'ten'"),
    ("synthetic:5:x", "write synthetic\\[:N\\], with nothing after N"),
    ("digits:test:extra", "write digits\\[:SPLIT\\].*'extra' after the split is not understood"),
    ("digits:", "bundled split must be one of .*got ''"),
    ("tfds:mnist:", "empty split"),
    ("tfds:", "write tfds:NAME"),
])
def test_every_part_of_a_spec_must_mean_something(spec, message):
    with pytest.raises(DatasetError, match=message):
        parse_spec(spec)


def test_tfds_split_keeps_its_own_colons():
    assert parse_spec("tfds:mnist:train[:80%]") == ("tfds", "mnist", "train[:80%]")
    assert parse_spec("synthetic:64") == ("synthetic", "64", "train")
    assert parse_spec("digits:test") == ("bundled", "digits", "test")
