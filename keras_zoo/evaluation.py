"""Evaluation of frozen features: weighted k-NN and linear probe.

The two protocols of self-supervised papers (DINO, Caron et al. 2021, Sec. 4.1):
a k-nearest-neighbour classifier on L2-normalised features (k = 20, cosine
similarity, votes weighted by exp(similarity / 0.07), as DINO's eval_knn.py),
and a linear classifier trained on top of the frozen features. Both work for
any model that maps images to a feature vector (a DINO teacher backbone, a ViT
with ``num_classes=None``, an autoencoder's encoder) or for raw pixels.
"""

import keras
import numpy as np

from keras_zoo.training import optimizers


def extract_features(model, images, batch_size=256, progress=False):
    """Runs ``model`` (any callable images -> (B, ...) features) in inference
    mode over ``images`` and returns (N, D) float32 numpy features.

    The last chunk is padded to a full batch so every call has one static shape
    (one compiled program), then the padding is cut off. A ``keras.Model``
    runs through ``predict_on_batch`` (one traced graph, not eager calls).
    ``progress``: a Keras progress bar over the images."""
    images = np.asarray(images)
    if len(images) == 0:
        raise ValueError("extract_features got no images (an empty array)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    batch_size = min(batch_size, len(images))
    bar = keras.utils.Progbar(len(images), unit_name="image") if progress else None
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        n = len(chunk)
        if n < batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, axis=0)])
        if isinstance(model, keras.Model):
            features = model.predict_on_batch(chunk)
        elif isinstance(model, keras.Layer):
            features = model(chunk, training=False)
        else:
            features = model(chunk)
        out.append(keras.ops.convert_to_numpy(features)[:n])
        if bar is not None:
            bar.add(n)
    features = np.concatenate(out).astype("float32")
    return features.reshape(len(features), -1)


def _check_pair(features, labels, what):
    features, labels = np.asarray(features, "float32"), np.asarray(labels)
    if features.ndim != 2 or len(features) == 0:
        raise ValueError(f"{what} features must be a non-empty (N, D) array, got shape "
                         f"{features.shape}")
    if labels.shape != (len(features),):
        raise ValueError(f"{what} labels must have shape ({len(features)},) to match the "
                         f"features, got {labels.shape}")
    return features, labels.astype("int64")


def _l2_normalize(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_predict(train_features, train_labels, test_features, k=20, temperature=0.07,
                num_classes=None, chunk_size=1024):
    """Weighted k-NN: each of the k most cosine-similar training points votes for
    its label with weight exp(similarity / temperature); returns (predictions,
    class scores (N_test, num_classes))."""
    train_features, train_labels = _check_pair(train_features, train_labels, "training")
    test_features = np.asarray(test_features, "float32")
    if test_features.ndim != 2 or test_features.shape[1] != train_features.shape[1]:
        raise ValueError(f"test features must be (N, {train_features.shape[1]}), got "
                         f"{test_features.shape}")
    if not 1 <= k <= len(train_features):
        raise ValueError(f"k={k} must be between 1 and the number of training points "
                         f"({len(train_features)})")
    num_classes = num_classes or int(train_labels.max()) + 1
    train = _l2_normalize(train_features)
    scores = []
    for start in range(0, len(test_features), chunk_size):
        test = _l2_normalize(test_features[start:start + chunk_size])
        similarity = test @ train.T
        top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        weights = np.exp(np.take_along_axis(similarity, top, axis=1) / temperature)
        votes = np.zeros((len(test), num_classes))
        np.add.at(votes, (np.arange(len(test))[:, None], train_labels[top]), weights)
        scores.append(votes)
    scores = np.concatenate(scores)
    return scores.argmax(axis=1), scores


def knn_accuracy(train_features, train_labels, test_features, test_labels, k=20,
                 temperature=0.07):
    """Top-1 accuracy of ``knn_predict`` on labelled test features."""
    test_features, test_labels = _check_pair(test_features, test_labels, "test")
    predictions, _ = knn_predict(train_features, train_labels, test_features, k=k,
                                 temperature=temperature,
                                 num_classes=int(max(np.max(train_labels), test_labels.max())) + 1)
    return float(np.mean(predictions == test_labels))


def linear_probe(train_features, train_labels, test_features, test_labels, epochs=100,
                 batch_size=128, learning_rate=1e-2, weight_decay=1e-4, seed=0):
    """Trains one softmax layer on frozen features and returns test accuracy.

    Features are standardised with the training set's mean and std first (the
    paper's probes use BatchNorm-free linear layers on normalised features;
    standardising makes one learning rate fit every feature scale)."""
    train_features, train_labels = _check_pair(train_features, train_labels, "training")
    test_features, test_labels = _check_pair(test_features, test_labels, "test")
    mean = train_features.mean(axis=0)
    std = train_features.std(axis=0) + 1e-6
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    keras.utils.set_random_seed(seed)
    probe = keras.Sequential([keras.Input((train_features.shape[1],)),
                              keras.layers.Dense(num_classes)])
    probe.compile(optimizer=optimizers.AdamW(learning_rate, weight_decay=weight_decay),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], steps_per_execution=16)
    probe.fit((train_features - mean) / std, train_labels, epochs=epochs,
              batch_size=min(batch_size, len(train_features)), verbose=0)
    logits = probe.predict((test_features - mean) / std, verbose=0)
    return float(np.mean(logits.argmax(axis=1) == test_labels))


# ---------------------------------------------------------------- n-gram baselines
# What a language model must beat on the same tokens: counts from the
# training token stream, perplexity on (previous, target) pairs of another split.

def unigram_perplexity(train_ids, targets, vocab_size):
    """Perplexity of add-one unigram frequencies: P(w) = (c(w) + 1) / (N + V)."""
    train_ids, targets = _ids(train_ids), _ids(targets)
    counts = np.bincount(train_ids, minlength=vocab_size)
    p = (counts[targets] + 1.0) / (len(train_ids) + vocab_size)
    return float(np.exp(-np.mean(np.log(p))))


def bigram_perplexity(train_ids, previous, targets, vocab_size, discount=0.75):
    """Perplexity of an interpolated Kneser-Ney bigram model (Chen & Goodman 1998):

        P(w | v) = max(c(v, w) - d, 0) / c(v) + d N1+(v .) / c(v) * P_cont(w),

    P_cont(w) = (N1+(. w) + 1) / (N1+(. .) + V) (the number of distinct
    words seen before w, add-one so no token has probability 0); a context
    never seen in training falls back to P_cont. ``train_ids`` is one token
    stream; ``previous[i]`` is the token before ``targets[i]``."""
    train_ids, previous, targets = _ids(train_ids), _ids(previous), _ids(targets)
    if previous.shape != targets.shape:
        raise ValueError(f"previous {previous.shape} and targets {targets.shape} differ in shape")
    v = np.int64(vocab_size)
    keys, counts = np.unique(train_ids[:-1] * v + train_ids[1:], return_counts=True)
    context_counts = np.bincount(train_ids[:-1], minlength=vocab_size).astype("float64")
    followers = np.bincount(keys // v, minlength=vocab_size)  # N1+(v .)
    predecessors = np.bincount(keys % v, minlength=vocab_size)  # N1+(. w)
    p_cont = (predecessors + 1.0) / (len(keys) + vocab_size)
    query = previous * v + targets
    at = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    pair_counts = np.where(keys[at] == query, counts[at], 0)
    c = context_counts[previous]
    seen = c > 0
    safe = np.where(seen, c, 1.0)
    p = np.where(seen, np.maximum(pair_counts - discount, 0) / safe
                 + discount * followers[previous] / safe * p_cont[targets], p_cont[targets])
    return float(np.exp(-np.mean(np.log(p))))


def _ids(values):
    values = np.asarray(values, dtype="int64").reshape(-1)
    if values.size == 0:
        raise ValueError("no tokens to count or score")
    return values


def labelled_subset(labels, per_class, seed=0):
    """Indices of ``per_class`` randomly chosen examples of every class (all
    of a class that has fewer), sorted: the "few labels" setting of
    semi-supervised evaluation. ``per_class=None`` keeps every index."""
    labels = np.asarray(labels)
    if per_class is None:
        return np.arange(len(labels))
    if per_class < 1:
        raise ValueError(f"labels per class must be >= 1, got {per_class}")
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:per_class]
              for c in np.unique(labels)]
    return np.sort(np.concatenate(chosen))


def pca(train_features, dim):
    """Principal component projection fitted on ``train_features``: returns
    ``project(x) -> (N, dim)`` (centred with the training mean). ``dim`` is
    capped at min(N, D), the most components the data has."""
    train_features = np.asarray(train_features, "float64")
    dim = min(dim, *train_features.shape)
    mean = train_features.mean(axis=0)
    # Right singular vectors of the centred data are the principal axes.
    _, _, vt = np.linalg.svd(train_features - mean, full_matrices=False)
    components = vt[:dim].T
    return lambda x: ((np.asarray(x, "float64") - mean) @ components).astype("float32")


def transfer_scores(train_features, train_labels, test_features, test_labels,
                    labels_per_class=(None,), seeds=1, k=20, probe_epochs=100):
    """k-NN and linear-probe test accuracy with every training label
    (``None``) or ``n`` labels per class, averaged over ``seeds`` random
    labelled subsets: ``{setting: {"knn": [...], "probe": [...], "train_points": n}}``
    where a setting is ``"all"`` or ``"<n>/class"``. k-NN uses
    k = min(k, labelled points)."""
    out = {}
    for per_class in labels_per_class:
        key = "all" if per_class is None else f"{per_class}/class"
        knn, probe = [], []
        for seed in range(1 if per_class is None else seeds):
            idx = labelled_subset(train_labels, per_class, seed)
            features, labels = np.asarray(train_features)[idx], np.asarray(train_labels)[idx]
            knn.append(knn_accuracy(features, labels, test_features, test_labels,
                                    k=min(k, len(idx))))
            probe.append(linear_probe(features, labels, test_features, test_labels,
                                      epochs=probe_epochs, seed=seed))
        out[key] = {"knn": knn, "probe": probe, "train_points": len(idx)}
    return out
