"""Greedy and beam-search decoding over an explicit cache (host-side loops).

Both drive a compiled ``step(token_ids (N, 1), cache, index) -> (logits
(N, 1, vocab), cache)``: the prefix is never recomputed, one call per new
token. keras-hub's ``BeamSampler`` has no length penalty and wants the
encoder output tiled into its cache by the caller; the search here follows
tensor2tensor's ``beam_search.py`` (Wu et al. 2016's length penalty
lp(n) = ((5 + n) / 6) ** alpha, 2 x beam candidates per step so that a
finished hypothesis never displaces an alive one, and its early stop: the
best alive hypothesis, even at the maximum length's penalty, can no longer
beat the worst finished one).
"""

import numpy as np

NEG_INF = -1.0e9


def length_penalty(length, alpha):
    """Wu et al. 2016 / the Transformer paper's beam search: ((5 + n) / 6) ** alpha."""
    return ((5.0 + np.asarray(length, np.float64)) / 6.0) ** alpha


def _log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def target_limit(source_length, max_target_length, max_length=None):
    """Most target tokens for one source of ``source_length`` ids (its end
    token included): ``max_length`` or the paper's source length + 50, capped
    at ``max_target_length``. Each sentence its own: the Keras batch decoder
    and the TFLite host loop (export/translate.py, one sentence at a time)
    use this one rule, so a sentence's tokens do not depend on its batch."""
    return min(max_target_length, max_length or source_length + 50)


def _row_limits(max_length, batch):
    """``max_length``: one int for every row or one per row -> (batch,) ints."""
    limits = np.broadcast_to(np.asarray(max_length, np.int64), (batch,))
    if limits.size and limits.min() < 1:
        raise ValueError(f"max_length must be >= 1 for every row, got {limits.min()}")
    return limits


def greedy_search(step, cache, start_ids, max_length, end_id):
    """Greedy decoding. ``start_ids`` (batch,): the first decoder input token;
    ``max_length``: most new tokens, one int or one per row (a row stops at
    its own, as it would decoded alone). Returns a list per sequence of
    generated ids (up to and excluding end_id)."""
    batch = len(start_ids)
    limits = _row_limits(max_length, batch)
    token = np.asarray(start_ids, np.int32)[:, None]
    done = np.zeros(batch, bool)
    out = [[] for _ in range(batch)]
    for index in range(int(limits.max(initial=0))):
        logits, cache = step(token, cache, index)
        token = np.asarray(logits)[:, -1].argmax(-1).astype(np.int32)
        for b in np.flatnonzero(~done):
            if token[b] == end_id:
                done[b] = True
            else:
                out[b].append(int(token[b]))
        done |= index + 1 >= limits
        if done.all():
            break
        token = token[:, None]
    return out


def beam_search(step, cache, start_ids, max_length, end_id, beam_size=4, alpha=0.6,
                reorder=None):
    """Beam search with length penalty; returns (best ids per sequence, scores).

    Args:
        step: compiled decoder step on ``batch * beam_size`` rows.
        cache: the decoder cache for ``batch * beam_size`` rows (row
            ``b * beam_size + k`` is beam k of sequence b).
        start_ids: (batch,) first decoder input token.
        max_length: most new tokens, one int or one per sequence: a sequence
            is decided at its own limit or early stop, exactly as if it were
            decoded alone (the batch only shares the steps).
        reorder: ``reorder(cache, rows)`` gathers cache rows (default: take
            along axis 0 of every tensor of the nest).
        alpha: 0.6 as in the paper; 0 ranks by total log-probability.
    """
    batch, k = len(start_ids), beam_size
    limits = _row_limits(max_length, batch)
    reorder = reorder or _take_rows
    alive_seq = np.zeros((batch, k, 0), np.int32)
    alive_logp = np.tile(np.array([0.0] + [NEG_INF] * (k - 1)), (batch, 1))
    finished_seq = np.zeros((batch, k, 0), np.int32)
    finished_score = np.full((batch, k), NEG_INF)
    finished_flag = np.zeros((batch, k), bool)
    token = np.repeat(np.asarray(start_ids, np.int32), k)[:, None]
    max_penalty = length_penalty(limits, alpha)
    results, scores = [None] * batch, [None] * batch
    for index in range(int(limits.max(initial=0))):
        logits, cache = step(token, cache, index)
        vocab = np.asarray(logits).shape[-1]
        logp = _log_softmax(np.asarray(logits)[:, -1]).reshape(batch, k, vocab)
        candidates = (alive_logp[:, :, None] + logp).reshape(batch, k * vocab)
        top = np.argsort(-candidates, axis=1, kind="stable")[:, :2 * k]
        top_logp = np.take_along_axis(candidates, top, axis=1)
        top_beam, top_token = top // vocab, (top % vocab).astype(np.int32)
        top_seq = np.concatenate(
            [np.take_along_axis(alive_seq, top_beam[:, :, None], axis=1), top_token[:, :, None]],
            axis=2)
        ended = top_token == end_id
        # Alive: the best k candidates that did not end.
        alive_rank = np.where(ended, NEG_INF, top_logp)
        keep = np.argsort(-alive_rank, axis=1, kind="stable")[:, :k]
        alive_seq = np.take_along_axis(top_seq, keep[:, :, None], axis=1)
        alive_logp = np.take_along_axis(alive_rank, keep, axis=1)
        parents = np.take_along_axis(top_beam, keep, axis=1)
        # Finished: the best k of the old finished and the candidates that ended.
        new_score = np.where(ended, top_logp / length_penalty(index + 1, alpha), NEG_INF)
        pad = np.zeros((batch, k, 1), np.int32)
        pool_seq = np.concatenate([np.concatenate([finished_seq, pad], axis=2), top_seq], axis=1)
        pool_score = np.concatenate([finished_score, new_score], axis=1)
        pool_flag = np.concatenate([finished_flag, ended], axis=1)
        best = np.argsort(-pool_score, axis=1, kind="stable")[:, :k]
        finished_seq = np.take_along_axis(pool_seq, best[:, :, None], axis=1)
        finished_score = np.take_along_axis(pool_score, best, axis=1)
        finished_flag = np.take_along_axis(pool_flag, best, axis=1)
        # Early stop (tensor2tensor): no alive beam can still beat the worst finished one.
        lowest_finished = np.where(finished_flag.any(axis=1),
                                   np.where(finished_flag, finished_score, 0.0).min(axis=1),
                                   -np.inf)
        decided = (index + 1 >= limits) | (lowest_finished > alive_logp[:, 0] / max_penalty)
        final_alive = alive_logp / length_penalty(alive_seq.shape[2], alpha)
        for b in np.flatnonzero(decided):
            if results[b] is None:  # a sequence's answer is fixed the step it is decided
                results[b], scores[b] = _best(b, finished_seq, finished_score,
                                              finished_flag, alive_seq, final_alive, end_id)
        if all(r is not None for r in results):
            break
        cache = reorder(cache, (np.arange(batch)[:, None] * k + parents).reshape(-1))
        token = alive_seq[:, :, -1].reshape(-1, 1)
    return results, scores


def _best(b, finished_seq, finished_score, finished_flag, alive_seq, final_alive, end_id):
    """Sequence b's answer: its best finished hypothesis, else its best alive one."""
    if finished_flag[b].any():
        seq, score = finished_seq[b, 0], finished_score[b, 0]
    else:
        best = int(np.argmax(final_alive[b]))
        seq, score = alive_seq[b, best], final_alive[b, best]
    seq = [int(t) for t in seq]
    return (seq[:seq.index(end_id)] if end_id in seq else seq), float(score)


def compiled(model, fn):
    """``fn(*tensors)`` compiled for the model's backend: a tf.function on
    TensorFlow (XLA on GPU/TPU; on CPU TensorFlow's own kernels, as the
    trainer's --jit_compile=auto), jax.jit over the model's current weight
    values on JAX (stateless), eager elsewhere. Compiled once per input shape."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        accelerated = bool(tf.config.list_logical_devices("GPU") or
                           tf.config.list_logical_devices("TPU"))
        return tf.function(fn, jit_compile=accelerated, reduce_retracing=True)
    if backend == "jax":
        import jax

        def pure(values, *args):
            with keras.StatelessScope(state_mapping=list(zip(model.variables, values))):
                return fn(*args)

        jitted = jax.jit(pure)
        return lambda *args: jitted([v.value for v in model.variables], *args)
    return fn


def _take_rows(cache, rows):
    from keras import ops, tree

    rows = ops.convert_to_tensor(np.asarray(rows, np.int32))
    return tree.map_structure(lambda t: ops.take(t, rows, axis=0), cache)
