"""Regenerates keras_zoo/data/bundled/digits.npz from scikit-learn's copy of the
UCI optical-recognition handwritten digits (1,797 8x8 images, 10 classes).

    python tools/make_digits_npz.py

The split is fixed (stratified, seed 0, 20 % test) so that every run, test and
README number uses the same 1,437 training and 360 test images.
"""

import os

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

digits = load_digits()
images = digits.images.astype(np.uint8)  # values 0..16
x_train, x_test, y_train, y_test = train_test_split(
    images, digits.target.astype(np.uint8), test_size=0.2, random_state=0,
    stratify=digits.target)
out = os.path.join(os.path.dirname(__file__), "..", "keras_zoo", "data", "bundled", "digits.npz")
np.savez_compressed(out, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
print(out, x_train.shape, x_test.shape)
