"""k-NN and linear probe on frozen features (DINO's evaluation protocols)."""

import math

import keras
import numpy as np
import pytest

from keras_zoo import evaluation


def test_knn_matches_a_hand_computed_vote():
    # Training points on the unit circle at 0, 90 and 180 degrees; the query at
    # 45 degrees is equally similar (cos 45) to the first two, and their
    # labels differ, so the third neighbour (cos 135) decides:
    # class 0 gets exp(c/T) + exp(-c/T), class 1 gets exp(c/T).
    train = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    labels = np.array([0, 1, 0])
    query = np.array([[2.0, 2.0]])  # length does not matter: cosine similarity
    c, t = math.cos(math.pi / 4), 0.5
    predictions, scores = evaluation.knn_predict(train, labels, query, k=3, temperature=t)
    np.testing.assert_allclose(scores[0], [math.exp(c / t) + math.exp(-c / t),
                                           math.exp(c / t)], rtol=1e-6)
    assert predictions[0] == 0
    # With k=2 the third point does not vote; the tie goes to the lower class.
    _, scores = evaluation.knn_predict(train, labels, query, k=2, temperature=t)
    np.testing.assert_allclose(scores[0], [math.exp(c / t), math.exp(c / t)], rtol=1e-6)


def test_knn_weights_sharpen_with_temperature():
    # One close neighbour of class 1 against two far ones of class 0: the
    # exponential weighting lets the close one win at a low temperature only.
    train = np.array([[1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    labels = np.array([1, 0, 0])
    query = np.array([[1.0, 0.0]])
    assert evaluation.knn_predict(train, labels, query, k=3, temperature=0.07)[0][0] == 1
    assert evaluation.knn_predict(train, labels, query, k=3, temperature=100.0)[0][0] == 0


def test_knn_accuracy_and_bad_inputs():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 8)) * 5
    y = np.repeat(np.arange(3), 20)
    x = centers[y] + rng.normal(size=(60, 8))
    assert evaluation.knn_accuracy(x[::2], y[::2], x[1::2], y[1::2], k=5) == 1.0
    with pytest.raises(ValueError, match=r"k=50 must be between 1 and .*\(30\)"):
        evaluation.knn_accuracy(x[::2], y[::2], x[1::2], y[1::2], k=50)
    with pytest.raises(ValueError, match="non-empty"):
        evaluation.knn_predict(np.zeros((0, 8)), np.zeros(0), x)
    with pytest.raises(ValueError, match=r"test features must be \(N, 8\)"):
        evaluation.knn_predict(x, y, np.zeros((2, 3)))


def test_extract_features_pads_the_last_batch_and_keeps_order():
    calls = []

    def model(batch):
        calls.append(batch.shape)
        return batch.reshape(len(batch), -1).sum(axis=1, keepdims=True)

    images = np.arange(10 * 4, dtype="float32").reshape(10, 2, 2, 1)
    features = evaluation.extract_features(model, images, batch_size=4)
    np.testing.assert_allclose(features[:, 0], images.reshape(10, -1).sum(axis=1))
    assert set(calls) == {(4, 2, 2, 1)}  # one static shape, last chunk padded
    with pytest.raises(ValueError, match="no images"):
        evaluation.extract_features(model, np.zeros((0, 2, 2, 1)))


def test_linear_probe_separates_linear_classes_but_not_noise():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 6)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32")
    accuracy = evaluation.linear_probe(x[:150], y[:150], x[150:], y[150:], epochs=40,
                                       batch_size=32)
    assert accuracy >= 0.9
    noise = rng.integers(0, 2, 200)  # labels unrelated to the features
    assert evaluation.linear_probe(x[:150], noise[:150], x[150:], noise[150:],
                                   epochs=40, batch_size=32) < 0.75


def test_extract_features_runs_keras_models_in_inference_mode():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dropout(0.9)])
    x = np.ones((3, 4), "float32")
    np.testing.assert_array_equal(evaluation.extract_features(model, x), x)


# ---------------------------------------------------------------- n-gram baselines

def test_unigram_perplexity_by_hand():
    from keras_zoo.evaluation import unigram_perplexity

    train = [0, 0, 1, 2]  # counts 2, 1, 1, 0 of V = 4; N + V = 8
    p = np.array([3, 2, 1]) / 8  # targets 0, 1, 3
    assert unigram_perplexity(train, [0, 1, 3], 4) == pytest.approx(np.exp(-np.log(p).mean()))


def test_bigram_is_a_distribution_and_beats_unigram_on_structure():
    from keras_zoo.evaluation import bigram_perplexity, unigram_perplexity

    rng = np.random.default_rng(0)
    train = rng.integers(0, 7, 500)
    vocab = 9  # tokens 7 and 8 never occur
    for context in (0, 3, 8):  # seen contexts and an unseen one
        # perplexity of each target alone is 1 / P(w | v): the P(. | v) must sum to 1
        probs = [1 / bigram_perplexity(train, [context], [w], vocab) for w in range(vocab)]
        assert sum(probs) == pytest.approx(1.0)
        assert min(probs) > 0
    # a stream where each token determines the next: bigram << unigram
    cycle = np.tile(np.arange(7), 100)
    prev, nxt = cycle[:-1], cycle[1:]
    assert bigram_perplexity(cycle, prev, nxt, vocab) < 1.1
    assert unigram_perplexity(cycle, nxt, vocab) > 6.5
    with pytest.raises(ValueError, match="differ in shape"):
        bigram_perplexity(cycle, prev[:3], nxt, vocab)


def test_labelled_subset_takes_n_per_class_at_random():
    labels = np.repeat(np.arange(3), [5, 8, 2])  # class 2 has fewer than asked
    idx = evaluation.labelled_subset(labels, 3, seed=0)
    assert np.all(np.diff(idx) > 0)  # sorted, no repeats
    assert np.bincount(labels[idx]).tolist() == [3, 3, 2]
    assert not np.array_equal(idx, evaluation.labelled_subset(labels, 3, seed=1))
    np.testing.assert_array_equal(evaluation.labelled_subset(labels, None), np.arange(15))
    with pytest.raises(ValueError, match="labels per class must be >= 1, got 0"):
        evaluation.labelled_subset(labels, 0)


def test_pca_projects_onto_the_directions_of_largest_variance():
    rng = np.random.default_rng(0)
    # Variance 100 along (1, 1, 0)/sqrt(2), 1 along (1, -1, 0)/sqrt(2), 0.01 along z.
    basis = np.array([[1, 1, 0], [1, -1, 0], [0, 0, np.sqrt(2)]]) / np.sqrt(2)
    x = (rng.normal(size=(2000, 3)) * [10.0, 1.0, 0.1]) @ basis + 5.0
    project = evaluation.pca(x, 2)
    z = project(x)
    assert z.shape == (2000, 2) and z.dtype == np.float32
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-4)  # centred
    np.testing.assert_allclose(z.std(axis=0), [10.0, 1.0], rtol=0.05)
    first = project(np.array([[5.0, 5.0, 0.0], [6.0, 6.0, 0.0]]))
    assert abs(abs(first[1, 0] - first[0, 0]) - np.sqrt(2)) < 0.05  # a unit move along axis 1
    assert evaluation.pca(x[:2], 3)(x).shape == (2000, 2)  # capped at the points it has


def test_transfer_scores_report_each_label_budget():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 5)) * 4
    labels = np.repeat(np.arange(3), 40)
    features = centres[labels] + rng.normal(size=(120, 5))
    scores = evaluation.transfer_scores(features[::2], labels[::2], features[1::2],
                                        labels[1::2], labels_per_class=(2, None), seeds=3,
                                        probe_epochs=30)
    assert list(scores) == ["2/class", "all"]
    assert scores["2/class"]["train_points"] == 6 and len(scores["2/class"]["knn"]) == 3
    assert scores["all"]["train_points"] == 60 and len(scores["all"]["probe"]) == 1
    assert scores["all"]["knn"][0] >= 0.95 and scores["all"]["probe"][0] >= 0.95
