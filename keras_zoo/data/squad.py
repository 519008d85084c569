"""Extractive question answering as in SQuAD v1.1 (Rajpurkar et al. 2016) and
BERT's run_squad.py: question + context -> windows of token ids, the best
answer span decoded from start/end logits, and the official evaluate-v1.1.py
metrics (exact match and token F1 after normalisation). Plain Python, no
TensorFlow: the model only supplies the logits."""

import collections
import re
import string

import numpy as np

# ---------------------------------------------------------------- metrics (evaluate-v1.1.py)

def normalize_answer(text):
    """Lower case, drop punctuation and the articles a/an/the, squeeze whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction, ground_truth):
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction, ground_truth):
    predicted = normalize_answer(prediction).split()
    truth = normalize_answer(ground_truth).split()
    common = collections.Counter(predicted) & collections.Counter(truth)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(truth)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions, answers):
    """``{"exact_match", "f1"}`` in percent, each prediction scored against the
    best of its reference answers (a list of strings per question)."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} questions")
    if not predictions:
        raise ValueError("no predictions to score")
    em = sum(max(exact_match(p, a) for a in refs) for p, refs in zip(predictions, answers))
    f1 = sum(max(f1_score(p, a) for a in refs) for p, refs in zip(predictions, answers))
    return {"exact_match": 100.0 * em / len(predictions), "f1": 100.0 * f1 / len(predictions)}


# ---------------------------------------------------------------- features (run_squad.py)

def _is_whitespace(c):
    return c in " \t\r\n" or ord(c) == 0x202F


def context_words(context):
    """(words, char_to_word): the context split on whitespace, as read_squad_examples."""
    words, char_to_word, previous_space = [], [], True
    for c in context:
        if _is_whitespace(c):
            previous_space = True
        else:
            if previous_space:
                words.append(c)
            else:
                words[-1] += c
            previous_space = False
        char_to_word.append(len(words) - 1)
    return words, char_to_word


def make_features(tokenizer, question, context, sequence_length, max_query_length=64,
                  doc_stride=128, answer_start=None, answer_text=None):
    """Windows of ``[CLS] question [SEP] context-part [SEP]`` (convert_examples_to_features).

    Returns a list of dicts, one per window: ``token_ids``, ``segment_ids``,
    ``padding_mask`` (lists of ``sequence_length``), ``tokens`` (the window's
    pieces), ``token_to_word`` (window
    position -> context word, for context tokens), ``max_context`` (whether
    this window is the one where the token has most context), ``words``; and
    ``start_position``/``end_position`` when an answer (character offset +
    text) is given (0, 0 = [CLS] when the answer is outside the window).
    """
    words, char_to_word = context_words(context)
    query = tokenizer.tokenize(question)[:max_query_length]
    token_to_word, word_to_token, pieces = [], [], []
    for w, word in enumerate(words):
        word_to_token.append(len(pieces))
        for piece in tokenizer.tokenize(word):
            token_to_word.append(w)
            pieces.append(piece)
    start = end = None
    if answer_start is not None:
        first_word = char_to_word[answer_start]
        last_word = char_to_word[min(answer_start + len(answer_text), len(context)) - 1]
        start = word_to_token[first_word]
        end = (word_to_token[last_word + 1] - 1 if last_word < len(words) - 1
               else len(pieces) - 1)
        start, end = _improve_answer_span(pieces, start, end, tokenizer, answer_text)
    room = sequence_length - len(query) - 3
    if room < 1:
        raise ValueError(f"sequence_length={sequence_length} leaves no room for the context "
                         f"after a {len(query)}-token question")
    spans, offset = [], 0
    while offset < len(pieces) or not spans:
        length = min(len(pieces) - offset, room)
        spans.append((offset, length))
        if offset + length >= len(pieces):
            break
        offset += min(length, doc_stride)
    ids = tokenizer._ids
    special = tokenizer.special_tokens
    features = []
    for s, (offset, length) in enumerate(spans):
        tokens = [special["cls"], *query, special["sep"]]
        segments = [0] * len(tokens)
        window_to_word, max_context = {}, {}
        for i in range(length):
            window_to_word[len(tokens)] = token_to_word[offset + i]
            max_context[len(tokens)] = _is_max_context(spans, s, offset + i)
            tokens.append(pieces[offset + i])
            segments.append(1)
        tokens.append(special["sep"])
        segments.append(1)
        n = len(tokens)
        feature = {
            "token_ids": [ids[t] for t in tokens] + [tokenizer.pad_id] * (sequence_length - n),
            "segment_ids": segments + [0] * (sequence_length - n),
            "padding_mask": [1] * n + [0] * (sequence_length - n),
            "tokens": tokens, "token_to_word": window_to_word, "max_context": max_context,
            "words": words,
        }
        if start is not None:
            inside = offset <= start and end < offset + length
            shift = len(query) + 2 - offset
            feature["start_position"] = start + shift if inside else 0
            feature["end_position"] = end + shift if inside else 0
        features.append(feature)
    return features


def _improve_answer_span(pieces, start, end, tokenizer, answer_text):
    """The tightest token span whose text is the tokenized answer (e.g. "1895"
    inside "(1895-1943)." when the word is one whitespace token)."""
    target = " ".join(tokenizer.tokenize(answer_text))
    for new_start in range(start, end + 1):
        for new_end in range(end, new_start - 1, -1):
            if " ".join(pieces[new_start:new_end + 1]) == target:
                return new_start, new_end
    return start, end


def _is_max_context(spans, index, position):
    """Whether window ``index`` gives token ``position`` the most context
    (min(left, right) + 0.01 * length, as the original)."""
    best, best_score = None, None
    for s, (offset, length) in enumerate(spans):
        if not offset <= position < offset + length:
            continue
        left, right = position - offset, offset + length - 1 - position
        score = min(left, right) + 0.01 * length
        if best_score is None or score > best_score:
            best, best_score = s, score
    return best == index


# ---------------------------------------------------------------- decoding

def best_span(start_logits, end_logits, features, max_answer_length=30, n_best_size=20):
    """(score, window, start, end) of the best valid span over one question's
    windows: start and end inside the context, end >= start, at most
    ``max_answer_length`` tokens, the start where its window has most context
    (write_predictions' rules over its n-best start and end indexes)."""
    best = None
    for w, feature in enumerate(features):
        starts = np.argsort(start_logits[w])[::-1][:n_best_size]
        ends = np.argsort(end_logits[w])[::-1][:n_best_size]
        for s in starts:
            for e in ends:
                s, e = int(s), int(e)
                if s not in feature["token_to_word"] or e not in feature["token_to_word"]:
                    continue
                if not feature["max_context"].get(s, False):
                    continue
                if e < s or e - s + 1 > max_answer_length:
                    continue
                score = float(start_logits[w][s] + end_logits[w][e])
                if best is None or score > best[0]:
                    best = (score, w, s, e)
    return best


def span_text(tokenizer, feature, start, end):
    """The answer text of tokens ``start..end`` of a window: the tokenized span
    projected back onto the context words (write_predictions + get_final_text),
    so that "1895" comes out of the word "(1895-1943)." rather than the word."""
    words = feature["words"]
    orig_text = " ".join(words[feature["token_to_word"][start]:
                               feature["token_to_word"][end] + 1])
    tok_text = " ".join(feature["tokens"][start:end + 1]).replace(" ##", "").replace("##", "")
    return _final_text(" ".join(tok_text.split()), orig_text, tokenizer)


def _final_text(pred_text, orig_text, tokenizer):
    """get_final_text: where ``pred_text`` (tokenized: lower-cased, punctuation
    split off) sits in ``orig_text``, mapped through the characters that are
    not spaces; the whole ``orig_text`` when the two do not line up."""
    tok_text = " ".join(tokenizer.basic_tokenize(orig_text))
    start = tok_text.find(pred_text)
    if start == -1:
        return orig_text
    end = start + len(pred_text) - 1

    def strip_spaces(text):
        kept = [(i, c) for i, c in enumerate(text) if c != " "]
        return "".join(c for _, c in kept), {n: i for n, (i, _) in enumerate(kept)}

    orig_ns, orig_map = strip_spaces(orig_text)
    tok_ns, tok_map = strip_spaces(tok_text)
    if len(orig_ns) != len(tok_ns):
        return orig_text
    tok_to_ns = {i: n for n, i in tok_map.items()}
    if start not in tok_to_ns or end not in tok_to_ns:
        return orig_text
    return orig_text[orig_map[tok_to_ns[start]]:orig_map[tok_to_ns[end]] + 1]
