"""What the TensorFlow side (test_jax.py) and the JAX side (jax_cases.py) of the
cross-backend tests share: inputs, weights, forward outputs, a training batch.
Imports no TensorFlow (the JAX side runs with TensorFlow blocked)."""

import numpy as np

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}  # forward outputs across backends


def perturb(model, seed=0):
    """Adds N(0, 0.05) to every float weight, so no output is trivially zero
    (ViT's zero-initialised head) and every weight matters to the parity.
    BatchNorm variances stay positive; integer state (seed generators) is kept."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if "float" not in str(v.dtype) or not v.shape:
            continue
        value = np.asarray(v.numpy()) + rng.normal(0.0, 0.05, v.shape)
        if "variance" in v.path:
            value = np.abs(value) + 0.5
        v.assign(value.astype(str(v.dtype)))


_TEXTS = ["File not found", "Permission denied", "Open the file", "Close the window",
          "Datei nicht gefunden", "Zugriff verweigert", "Fenster schliessen"] * 10


def prepare(model, seed=0):
    """What the TensorFlow side does before saving a tiny preset: ``perturb``,
    and give a text family (a ``tokenizer`` property that is None) a small
    SentencePiece vocabulary, which its preset folder must carry."""
    perturb(model, seed)
    if "tokenizer" in dir(type(model)) and model.tokenizer is None:
        from keras_zoo.data.tokenizers import SentencePieceTokenizer

        model.tokenizer = SentencePieceTokenizer.train(_TEXTS, vocab_size=300)


def example_inputs(model, batch=2, seed=1):
    """Deterministic inputs in the structure of ``model.input`` (a tensor, a
    list or a dict of them): floats in [0, 1), integers (token ids) in
    [0, 8), segment ids in [0, 2), padding masks all ones; unknown lengths
    become 8."""
    import keras

    rng = np.random.default_rng(seed)

    def one(spec):
        shape = (batch,) + tuple(8 if d is None else d for d in spec.shape[1:])
        if "padding_mask" in spec.name:  # every token real
            return np.ones(shape, str(spec.dtype))
        if "int" in str(spec.dtype):
            high = 2 if "segment" in spec.name else 8  # BERT's two segments
            return rng.integers(0, high, shape).astype(str(spec.dtype))
        return rng.random(shape).astype("float32")

    return keras.tree.map_structure(one, model.input)


def _arrays(prefix, value):
    if isinstance(value, dict):
        return {k: v for key in sorted(value) for k, v in _arrays(f"{prefix}.{key}",
                                                                  value[key]).items()}
    if isinstance(value, (list, tuple)):
        return {k: v for i, item in enumerate(value)
                for k, v in _arrays(f"{prefix}.{i}", item).items()}
    return {prefix: np.asarray(value)}


def forward(model):
    """{output name: array}: ``predict`` of the model on ``example_inputs``
    when it is deterministic (two runs agree; MAE's masking is random), and
    every serving signature that is a Keras model (VAE encoder/decoder,
    MAE's unmasked encoder, DINO's teacher backbone)."""
    import keras
    from keras import ops

    out = {}
    x = example_inputs(model)
    first = model.predict(x, verbose=0)
    if all(np.array_equal(a, b) for a, b in zip(
            _arrays("", first).values(), _arrays("", model.predict(x, verbose=0)).values())):
        out.update(_arrays("model", first))
    for name, fn in sorted(model.serving_signatures().items()):
        if fn is model or not hasattr(fn, "inputs"):
            continue
        result = keras.tree.map_structure(ops.convert_to_numpy, fn(example_inputs(fn)))
        out.update(_arrays(f"serving.{name}", result))
    return out


def generate(model):
    """{decoding: token-id lists} for a text family, from fixed token ids:
    ``translate_ids`` greedy and with a beam of 2 (the Transformer), greedy
    ``generate`` (a CausalLM); {} for other families. Short, so a test stays
    quick; compared exactly across backends (an argmax, not a float)."""
    end = model.tokenizer.end_id if getattr(model, "tokenizer", None) is not None else 3
    out = {}
    if hasattr(model, "translate_ids"):
        sources = [[5, 9, 12, 7, end], [20, 6, end]]
        for beam in (1, 2):
            out[f"translate_ids.beam{beam}"] = [
                [int(t) for t in row]
                for row in model.translate_ids(sources, beam_size=beam, max_length=6)]
    elif hasattr(model, "generate"):
        out["generate.greedy"] = [
            [int(t) for t in row]
            for row in model.generate([[5, 9, 12], [20, 6, 7]], max_new_tokens=5,
                                      sampler="greedy", return_ids=True)]
    return out


def assert_same_outputs(got, expected, what):
    assert sorted(got) == sorted(expected), f"{what}: outputs {sorted(got)} vs {sorted(expected)}"
    for key in expected:
        # 1e-5 of the output's scale: float32 elements that are sums of terms
        # as large as the output's largest (Mamba's prefill SSM state, up to
        # ~1e2, with elements near 1) round differently across backends by
        # up to 5e-4 (measured); outputs of scale <= 1 keep atol 1e-5.
        scale = max(1.0, float(np.max(np.abs(expected[key]), initial=0.0)))
        np.testing.assert_allclose(got[key], expected[key], rtol=TOLERANCE["rtol"],
                                   atol=TOLERANCE["atol"] * scale,
                                   err_msg=f"{what}: output {key}")


def _dino_views(model, x):
    c = model.get_zoo_config()
    rng = np.random.default_rng(3)
    views = {"global_crops": np.stack([x, x[::-1]], axis=1)}
    if c["num_local_crops"]:
        side, channels = c["local_crop_size"], x.shape[-1]
        views["local_crops"] = rng.random(
            (len(x), c["num_local_crops"], side, side, channels)).astype("float32")
    return views


# A family whose training batch is not (inputs, labels) names how to build one
# here (DINO trains on multi-crop views, which its tf.data transform makes).
TRAIN_INPUTS = {"DINO": _dino_views}


def train_batch(model, batch=4):
    """(x, y) for one training step: example inputs, and integer labels of the
    output's shape without its last axis, below its width: (B,) for a (B, K)
    classifier, (B, T) for (B, T, vocab) next-token logits, one per head for
    named outputs. Families with their own objective ignore them."""
    x = example_inputs(model, batch=batch, seed=2)
    if type(model).__name__ in TRAIN_INPUTS:
        x = TRAIN_INPUTS[type(model).__name__](model, x)
    rng = np.random.default_rng(4)

    def labels(output):
        shape = (batch,) + tuple(8 if d is None else d for d in output.shape[1:-1])
        width = output.shape[-1] or 1
        return rng.integers(0, min(width, 8), shape).astype("int32")

    if isinstance(model.output, dict):  # named heads (BERT pre-training: mlm, nsp)
        return x, {k: labels(v) for k, v in sorted(model.output.items())}
    if len(model.outputs) != 1:
        return x, np.zeros(batch, "int32")
    return x, labels(model.outputs[0])
