"""Runs pytest under KERAS_BACKEND=jax with TensorFlow made unimportable:

    KERAS_BACKEND=jax python -m tests.backends.run_jax tests/backends/jax_cases.py -q

``keras_zoo.backend.block_tensorflow`` makes tensorflow (and
tensorflow_datasets, tensorflow_text, tf_keras) unimportable, as if not
installed, so a TensorFlow import anywhere keras_zoo's Keras code door
reaches fails these tests."""

import os
import sys

if __name__ == "__main__":
    if os.environ.get("KERAS_BACKEND") not in ("jax", "torch"):
        sys.exit("run_jax: set KERAS_BACKEND=jax (or torch)")
    from keras_zoo.backend import block_tensorflow

    block_tensorflow()
    import pytest

    sys.exit(pytest.main(sys.argv[1:]))
