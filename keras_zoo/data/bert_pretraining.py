"""BERT pre-training examples (Devlin et al. 2019; google-research/bert
create_pretraining_data.py): sentence pairs for next-sentence prediction and
masked tokens for the masked language model.

Two stages, as the original:

* ``create_instances`` (plain Python, a port of
  ``create_instances_from_document``): a document's segments (sentences)
  are gathered into chunks of about ``max_seq_length - 3`` tokens (10 % of
  documents aim shorter, ``short_seq_prob``); a chunk is cut at a random
  segment boundary into A and B. Half of the time B is replaced by segments
  of another document (NSP label 1, "NotNext"; 0 = "IsNext"), and the unused
  segments go back to the document for the next chunk. The pair is trimmed
  to fit, one token at a time from the longer side, randomly at its front
  or back, then laid out as ``[CLS] A [SEP] B [SEP]`` with segment ids
  0...0 1...1.
  One deliberate change: the original forces a random B when the chunk
  holds a single segment, which tips the mix above 50 % NotNext on text
  with long sentences; here the coin is thrown first and a one-segment
  chunk is cut inside the segment instead, so the pairs are the paper's
  50/50.
* ``mask_tokens`` (TensorFlow ops, static shapes, inside ``tf.data``): of
  the tokens other than [CLS], [SEP] and padding, ``round(length * 0.15)``
  (at most ``max_predictions_per_seq``, at least 1) are chosen; 80 % of the
  chosen become [MASK], 10 % a random token of the vocabulary, 10 % stay.
  The model predicts the original token at the chosen positions only.
  Unlike the original's fixed ``dupe_factor`` copies, masks are drawn anew
  each pass (as RoBERTa does); the draws depend only on the batch contents
  and its index in the pass, so a resumed run sees the same masks.
"""

import random

import numpy as np

NOT_NEXT, IS_NEXT = 1, 0  # next_sentence_labels of the original


def truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng):
    """Trims the longer list one token at a time, from its front or its back
    at random, until both fit in ``max_num_tokens`` (in place)."""
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def _flat(segments):
    return [t for segment in segments for t in segment]


def instances_from_document(documents, index, max_seq_length, short_seq_prob, rng):
    """NSP pairs (tokens_a, tokens_b, is_random_next) from ``documents[index]``,
    a list of non-empty segments (lists of token ids); random B segments come
    from another of ``documents``."""
    document = documents[index]
    max_num_tokens = max_seq_length - 3  # [CLS], [SEP], [SEP]
    # Mostly full-length sequences; sometimes shorter ones, so that the model
    # also sees the lengths of fine-tuning inputs (once per document, as the original).
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)
    pairs, chunk, chunk_length, i = [], [], 0, 0
    while i < len(document):
        chunk.append(document[i])
        chunk_length += len(document[i])
        if i == len(document) - 1 or chunk_length >= target_seq_length:
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            tokens_a = _flat(chunk[:a_end])
            is_random_next = rng.random() < 0.5
            if is_random_next:
                tokens_b = _random_segments(documents, index,
                                            target_seq_length - len(tokens_a), rng)
                i -= len(chunk) - a_end  # the unused segments start the next chunk
            elif len(chunk) == 1:
                if len(tokens_a) < 2:  # nothing to cut: no pair from a 1-token document
                    chunk, chunk_length, i = [], 0, i + 1
                    continue
                cut = rng.randint(1, len(tokens_a) - 1)
                tokens_a, tokens_b = tokens_a[:cut], tokens_a[cut:]
            else:
                tokens_b = _flat(chunk[a_end:])
            truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
            pairs.append((tokens_a, tokens_b, is_random_next))
            chunk, chunk_length = [], 0
        i += 1
    return pairs


def _random_segments(documents, index, target_length, rng):
    """Consecutive segments of another document from a random start, up to
    ``target_length`` tokens. Ten tries to draw another document, as the
    original (a group of one document has only itself)."""
    other = index
    for _ in range(10):
        other = rng.randint(0, len(documents) - 1)
        if other != index:
            break
    document = documents[other]
    tokens = []
    for segment in document[rng.randint(0, len(document) - 1):]:
        tokens.extend(segment)
        if len(tokens) >= target_length:
            break
    return tokens


def create_instances(documents, max_seq_length, short_seq_prob, cls_id, sep_id, pad_id,
                     seed):
    """Every NSP instance of a group of documents as fixed-shape arrays:
    ``token_ids``, ``segment_ids`` (n, max_seq_length) padded with ``pad_id``,
    ``lengths`` (n,) and ``next_sentence_labels`` (n,) (1 = random B)."""
    rng = random.Random(int(seed))
    documents = [[list(s) for s in d if len(s)] for d in documents]
    documents = [d for d in documents if d]
    rows = []
    for index in range(len(documents)):
        for a, b, is_random in instances_from_document(documents, index, max_seq_length,
                                                       short_seq_prob, rng):
            rows.append(([cls_id, *a, sep_id, *b, sep_id], len(a) + 2, is_random))
    n = len(rows)
    token_ids = np.full((n, max_seq_length), pad_id, np.int32)
    segment_ids = np.zeros((n, max_seq_length), np.int32)
    lengths = np.zeros(n, np.int32)
    labels = np.zeros(n, np.int32)
    for r, (tokens, a_length, is_random) in enumerate(rows):
        token_ids[r, :len(tokens)] = tokens
        segment_ids[r, a_length:len(tokens)] = 1
        lengths[r] = len(tokens)
        labels[r] = NOT_NEXT if is_random else IS_NEXT
    return token_ids, segment_ids, lengths, labels


def mask_tokens(token_ids, lengths, seed, vocab_size, mask_id, special_ids,
                max_predictions_per_seq, masked_lm_prob=0.15):
    """The masked-LM corruption of a batch, in TensorFlow ops (static shapes).

    Args:
        token_ids: (B, T) int32, each row ``[CLS] A [SEP] B [SEP]`` + padding.
        lengths: (B,) tokens before the padding.
        seed: (2,) int32/int64, a stateless-random seed.
        special_ids: ids never chosen ([CLS], [SEP], [PAD]).

    Returns a dict: ``token_ids`` (B, T) corrupted; ``mask_positions``,
    ``mask_ids`` (the original tokens) and ``mask_weights`` (1.0 for a real
    prediction, 0.0 for padding), each (B, max_predictions_per_seq), the
    positions in increasing order as the original writes them.
    """
    import tensorflow as tf

    token_ids = tf.convert_to_tensor(token_ids, tf.int32)
    batch, length = tf.shape(token_ids)[0], token_ids.shape[1]
    p = max_predictions_per_seq
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    positions = tf.range(length)[None, :]
    candidate = positions < tf.cast(lengths, tf.int32)[:, None]
    for special in special_ids:
        candidate &= token_ids != special
    # round(len * 0.15) with Python's round-half-to-even, at least 1, at most p.
    num_to_predict = tf.cast(tf.round(tf.cast(lengths, tf.float32) * masked_lm_prob), tf.int32)
    num_to_predict = tf.minimum(tf.maximum(num_to_predict, 1), p)
    num_to_predict = tf.minimum(num_to_predict,
                                tf.reduce_sum(tf.cast(candidate, tf.int32), axis=1))
    # A uniformly random subset: the candidates with the k largest random keys.
    keys = tf.random.stateless_uniform((batch, length), seeds[0])
    keys = tf.where(candidate, keys, -1.0)
    _, chosen = tf.math.top_k(keys, k=min(p, length))
    if p > length:
        chosen = tf.pad(chosen, [[0, 0], [0, p - length]])
    slot = tf.range(p)[None, :]
    real = slot < num_to_predict[:, None]
    # Sort the real positions ascending; padding slots go last, at position 0.
    sort_key = tf.where(real, chosen, length + slot)
    order = tf.argsort(sort_key, axis=1)
    chosen = tf.gather(chosen, order, batch_dims=1)
    real = tf.gather(real, order, batch_dims=1)
    mask_positions = tf.where(real, chosen, 0)
    mask_ids = tf.where(real, tf.gather(token_ids, mask_positions, batch_dims=1), 0)
    # 80 % [MASK], 10 % a random token of the vocabulary, 10 % unchanged.
    coin = tf.random.stateless_uniform((batch, p), seeds[1])
    random_token = tf.random.stateless_uniform((batch, p), seeds[2], minval=0,
                                               maxval=vocab_size, dtype=tf.int32)
    keep = tf.random.stateless_uniform((batch, p), seeds[3]) < 0.5
    replacement = tf.where(coin < 0.8, mask_id, tf.where(keep, mask_ids, random_token))
    rows = tf.broadcast_to(tf.range(batch)[:, None], (batch, p))
    index = tf.stack([tf.boolean_mask(rows, real), tf.boolean_mask(mask_positions, real)], 1)
    corrupted = tf.tensor_scatter_nd_update(token_ids, index,
                                            tf.boolean_mask(replacement, real))
    return {"token_ids": corrupted, "mask_positions": mask_positions, "mask_ids": mask_ids,
            "mask_weights": tf.cast(real, tf.float32)}


def split_segments(texts):
    """tf.string (N,) documents -> tf.RaggedTensor (N, segments) of sentences:
    blank lines end paragraphs, and ". ", "! ", "? " end sentences (the
    original reads one sentence per line). Empty segments are dropped."""
    import tensorflow as tf

    x = tf.strings.regex_replace(texts, r"\s*\n\s*\n\s*", "\x1e")
    x = tf.strings.regex_replace(x, r"([.!?])\s+", "\\1\x1e")
    segments = tf.strings.split(x, "\x1e")
    return tf.ragged.boolean_mask(segments, tf.strings.length(tf.strings.strip(segments)) > 0)
