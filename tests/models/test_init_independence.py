"""No two weight tensors of a fresh model are copies or prefixes of each other.

Keras 3 gives an unseeded initializer object a fixed seed at construction, so
one object passed to several weights draws the same stream for each: equal
kernels in every block, a table equal to the first rows of another (BERT's
position and token tables were). Every reference code draws each variable on
its own. Deterministic initialisations (zeros, ones, Mamba's A_log = log(1..N))
are told apart by their few distinct values and may repeat. A random weight
must also change with ``keras.utils.set_random_seed`` (an initializer object
made once at import has its seed fixed before any user seed is set).
"""

import keras
import numpy as np
import pytest

import keras_zoo

MIN_SIZE = 16  # a prefix of fewer values is no evidence
KEY = 8  # the first values, as a hash key


def _random_weights(name, seed):
    keras.utils.set_random_seed(seed)
    model = keras_zoo.from_preset(name)
    unique = {id(v): v for v in model.trainable_weights}  # tied weights: one variable
    weights = {v.path: np.asarray(keras.ops.convert_to_numpy(v)).ravel()
               for v in unique.values()}
    # a random draw has (nearly) all values distinct; zeros, ones, log(1..N) rows do not
    return {path: w for path, w in weights.items()
            if w.size >= MIN_SIZE and len(np.unique(w)) > w.size // 2}


def copies_or_prefixes(weights):
    """Pairs (a, b) of paths where the flattened a equals the first values of b."""
    groups = {}
    for path, w in weights.items():
        groups.setdefault(w[:KEY].tobytes(), []).append(path)
    found = []
    for paths in groups.values():
        for i, a in enumerate(paths):
            for b in paths[i + 1:]:
                k = min(weights[a].size, weights[b].size)
                if np.array_equal(weights[a][:k], weights[b][:k]):
                    found.append((a, b) if weights[a].size <= weights[b].size else (b, a))
    return found


def test_the_check_finds_a_shared_unseeded_initializer():
    init = keras.initializers.TruncatedNormal(stddev=0.02)
    shared = {"table": np.asarray(init((10, 4))).ravel(),
              "rows": np.asarray(init((5, 4))).ravel(),
              "own": np.asarray(keras.initializers.TruncatedNormal(stddev=0.02)((10, 4))).ravel()}
    assert copies_or_prefixes(shared) == [("rows", "table")]


@pytest.mark.parametrize("name", keras_zoo.list_presets(tiny=True))
def test_no_weight_is_a_copy_or_prefix_of_another(name):
    weights = _random_weights(name, 1)
    assert len(weights) >= 2, f"{name}: no randomly initialised weights found"
    assert copies_or_prefixes(weights) == []
    other = _random_weights(name, 2)
    assert [p for p, w in weights.items() if np.array_equal(w, other[p])] == []
