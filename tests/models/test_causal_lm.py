"""The shared causal-LM machinery, on a 2-block toy decoder defined here
(GPT and Mamba have their own tests of the same contract)."""

import keras
import numpy as np
import pytest
from keras import layers, ops

from keras_zoo.layers import TransformerEncoderBlock
from keras_zoo.models.causal_lm import CausalLM


class Positions(layers.Layer):
    def __init__(self, max_positions, dim, **kwargs):
        super().__init__(**kwargs)
        self.table = self.add_weight(shape=(max_positions, dim), name="table")

    def call(self, x, index=0):
        return x + ops.take(self.table, index + ops.arange(ops.shape(x)[1]), axis=0)[None]


class ToyLM(CausalLM):
    def __init__(self, vocab_size=64, hidden_dim=16, num_layers=2, sequence_length=8,
                 max_positions=32, name="toy_lm", **kwargs):
        ids = keras.Input((None,), dtype="int32", name="token_ids")
        embed = layers.Embedding(vocab_size, hidden_dim, name="embed")
        positions = Positions(max_positions, hidden_dim, name="positions")
        blocks = [TransformerEncoderBlock(2, 32, name=f"block_{i}") for i in range(num_layers)]
        head = layers.Dense(vocab_size, name="head")
        x = positions(embed(ids))
        for block in blocks:
            x = block(x, use_causal_mask=True)
        super().__init__(inputs=ids, outputs=head(x), name=name, **kwargs)
        self._parts = (embed, positions, blocks, head)

    def init_cache(self, batch_size, max_length):
        return [b.attention.init_cache(batch_size, max_length) for b in self._parts[2]]

    def call_with_cache(self, token_ids, cache, index):
        embed, positions, blocks, head = self._parts
        x = positions(embed(token_ids), index=index)
        new = []
        for block, c in zip(blocks, cache):
            x, c = block(x, use_causal_mask=True, cache=c, cache_index=index)
            new.append(c)
        return head(x), new

    def max_generation_length(self):
        return self.get_zoo_config()["max_positions"]


@pytest.fixture(scope="module")
def toy():
    keras.utils.set_random_seed(1)
    return ToyLM()


def _greedy_by_recomputing(model, prompt, n):
    ids = list(prompt)
    for _ in range(n):
        logits = ops.convert_to_numpy(model(np.array([ids], "int32")))
        ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt):]


def test_cached_generation_equals_recomputing_the_prefix(toy):
    prompts = [[5, 9, 3], [7, 1, 2], [4, 4]]
    got = toy.generate(prompts, max_new_tokens=6, stop_at_end=False)
    assert got == [_greedy_by_recomputing(toy, p, 6) for p in prompts]
    # and the cached step's logits equal the full pass within 1e-5
    prompt = np.array([[5, 9, 3, 8, 2]], "int32")
    full = ops.convert_to_numpy(toy(prompt))
    cache = toy.init_cache(1, 8)
    first, cache = toy.call_with_cache(prompt[:, :3], cache, 0)
    steps = [ops.convert_to_numpy(first)]
    for t in (3, 4):
        out, cache = toy.call_with_cache(prompt[:, t:t + 1], cache, t)
        steps.append(ops.convert_to_numpy(out))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def test_random_samplers_are_seeded(toy):
    a = toy.generate([[5, 9]], max_new_tokens=8, sampler="top_k", top_k=10, seed=3,
                     stop_at_end=False)
    b = toy.generate([[5, 9]], max_new_tokens=8, sampler="top_k", top_k=10, seed=3,
                     stop_at_end=False)
    assert a == b and len(a[0]) == 8
    c = toy.generate([[5, 9]], max_new_tokens=8, sampler="top_p", top_p=0.5, seed=3,
                     temperature=0.7, stop_at_end=False)
    assert len(c[0]) == 8


def test_bad_generation_requests_fail_in_one_line(toy):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        toy.generate([[5, 64]])
    with pytest.raises(ValueError, match="empty prompt"):
        toy.generate([[]])
    with pytest.raises(ValueError, match="passes the model's 32 positions"):
        toy.generate([[1] * 30], max_new_tokens=3)
    with pytest.raises(ValueError, match="no tokenizer"):
        toy.generate("Hello")
    with pytest.raises(ValueError, match="unknown sampler"):
        toy.generate([[1]], max_new_tokens=2, sampler="beam")


def test_windows_and_targets_from_documents(toy):
    import tensorflow as tf

    from keras_zoo.data import TextInfo

    docs = ["The file could not be opened for reading.", "Permission denied by the server."]
    model = ToyLM(vocab_size=400)
    examples = tf.data.Dataset.from_tensor_slices({"text": docs * 4})
    info = TextInfo("docs", "train", "documents", 8)
    model.prepare_data(examples, info)
    ids = model.tokenizer.encode(docs * 4)
    stream = [t for doc in ids for t in doc + [model.tokenizer.end_id]]
    batches = list(model.batch_data(examples, info, 2, training=True))
    assert len(batches) == model.steps_per_pass(info, 2) == len(stream) // 9 // 2
    x, y = (ops.convert_to_numpy(t) for t in batches[0])
    assert x.shape == y.shape == (2, 8)
    np.testing.assert_array_equal(x[0], stream[:8])
    np.testing.assert_array_equal(y[0], stream[1:9])
    np.testing.assert_array_equal(x[1], stream[9:17])


def test_evaluation_batches_carry_their_length_so_keras_evaluate_is_right():
    """Keras evaluate() misreports metrics on datasets of unknown length; the
    evaluation batches are counted, and evaluate() equals the eager mean."""
    import tensorflow as tf

    from keras_zoo.data import TextInfo

    keras.utils.set_random_seed(2)
    model = ToyLM(vocab_size=400)
    docs = ["The file could not be opened for reading.", "Permission denied by the server.",
            "Return the number of items in the container."]
    examples = tf.data.Dataset.from_tensor_slices({"text": docs * 6})
    info = TextInfo("docs", "validation", "documents", 18)
    model.prepare_data(examples, info)
    batches = model.batch_data(examples, info, 2, training=False)
    assert int(batches.cardinality()) == len(list(batches)) >= 3
    model.compile(**model.compile_defaults())
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    eager = np.mean([float(loss(y, model(x))) for x, y in batches])
    assert model.evaluate(batches, verbose=0, return_dict=True)["loss"] == pytest.approx(
        eager, rel=1e-5)
