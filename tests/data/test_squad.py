"""Extractive QA: run_squad.py's windows and decoding, evaluate-v1.1.py's metrics."""

import numpy as np
import pytest

import keras_zoo
from keras_zoo.data import squad
from keras_zoo.data.tokenizers import WordPieceTokenizer

WORDS = ["the", "composer", "lived", "from", "1895", "to", "1943", "in", "vienna", "and",
         "wrote", "songs", "who", "where", "did", "when", "(", ")", "-", ".", ",", "?"]
TOKENIZER = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS)
CONTEXT = "The composer (1895-1943) lived in Vienna, and wrote songs."


def test_official_metrics():
    assert squad.normalize_answer("The  Cat, sat!") == "cat sat"
    assert squad.exact_match("the Vienna.", "Vienna") == 1.0
    assert squad.f1_score("in Vienna", "Vienna") == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert squad.f1_score("Paris", "Vienna") == 0.0
    scores = squad.squad_metrics(["Vienna", "1943"], [["vienna", "Wien"], ["1895", "1943 "]])
    assert scores == {"exact_match": 100.0, "f1": 100.0}
    assert squad.squad_metrics(["a cat", "dog"], [["cat"], ["cat"]])["exact_match"] == 50.0
    with pytest.raises(ValueError, match="2 predictions for 1 questions"):
        squad.squad_metrics(["a", "b"], [["a"]])


def test_features_mark_the_answer_and_decode_back_to_its_text():
    start = CONTEXT.index("1895")
    (feature,) = squad.make_features(TOKENIZER, "When?", CONTEXT, 40, answer_start=start,
                                     answer_text="1895")
    tokens = feature["tokens"]
    assert tokens[:4] == ["[CLS]", "when", "?", "[SEP]"]
    s, e = feature["start_position"], feature["end_position"]
    assert tokens[s:e + 1] == ["1895"]  # the tight span inside the word "(1895-1943)"
    assert feature["segment_ids"][:4] == [0] * 4 and feature["segment_ids"][4] == 1
    assert len(feature["token_ids"]) == 40 and sum(feature["padding_mask"]) == len(tokens)
    # Projected back onto the context: "1895", not the whole word "(1895-1943)".
    assert squad.span_text(TOKENIZER, feature, s, e) == "1895"
    vienna = tokens.index("vienna")
    assert squad.span_text(TOKENIZER, feature, vienna, vienna) == "Vienna"


def test_long_contexts_are_cut_into_overlapping_windows():
    context = " ".join(["songs"] * 50 + ["vienna"] + ["songs"] * 10)
    features = squad.make_features(TOKENIZER, "Where?", context, 24, doc_stride=8,
                                   answer_start=context.index("vienna"), answer_text="vienna")
    assert len(features) > 3
    inside = [f for f in features if f["start_position"] > 0]
    assert inside and all(f["tokens"][f["start_position"]] == "vienna" for f in inside)
    outside = [f for f in features if f["start_position"] == 0]
    assert outside and all(f["end_position"] == 0 for f in outside)  # [CLS]: not here
    # Each context token is "max context" in exactly one window.
    owners = {}
    for w, f in enumerate(features):
        for position, word in f["token_to_word"].items():
            if f["max_context"][position]:
                assert word not in owners
                owners[word] = w
    assert len(owners) == 61


def test_best_span_keeps_to_valid_spans():
    (feature,) = squad.make_features(TOKENIZER, "Where?", CONTEXT, 40)
    start, end = np.full((1, 40), -100.0), np.full((1, 40), -100.0)
    vienna = feature["tokens"].index("vienna")
    start[0, 0] = end[0, 0] = 50.0  # [CLS] and the question are never an answer
    start[0, 2] = 60.0
    start[0, vienna] = end[0, vienna] = 10.0
    end[0, vienna - 3] = 30.0  # a higher end before the start: not a span
    score, window, s, e = squad.best_span(start, end, [feature])
    assert (window, s, e, score) == (0, vienna, vienna, 20.0)
    # max_answer_length bounds the span.
    end[0, vienna + 5] = 100.0
    assert squad.best_span(start, end, [feature], max_answer_length=3)[2:] == (vienna, vienna)
    assert squad.best_span(start, end, [feature], max_answer_length=6)[2:] == \
        (vienna, vienna + 5)
    assert squad.best_span(np.full((1, 40), 0.0), end, [dict(feature, token_to_word={})]) \
        is None  # no context token at all


def test_answer_decodes_a_span_of_the_context():
    model = keras_zoo.BERT(vocab_size=len(TOKENIZER.vocabulary), hidden_dim=16, num_layers=1,
                           num_heads=2, intermediate_dim=32, max_sequence_length=32,
                           sequence_length=32, task="question_answering")
    model.tokenizer = TOKENIZER
    answers = model.answer(["Where did the composer live?", "When?"], [CONTEXT, CONTEXT],
                           max_answer_length=2)
    for a in answers:
        assert a and a in CONTEXT and len(TOKENIZER.tokenize(a)) <= 2 + 2
