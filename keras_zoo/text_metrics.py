"""Text metrics on strings: corpus BLEU and ROUGE-L through keras-hub.

keras-hub's ``Bleu`` replicates sacreBLEU's default (13a tokenisation,
no smoothing, corpus-level brevity penalty); ``tests/test_text_metrics.py``
checks it against ``sacrebleu`` itself on the same hypotheses. Scores are
reported on sacreBLEU's 0-100 scale.
"""


def corpus_bleu(references, hypotheses):
    """Corpus BLEU (0-100). ``references``: one list of reference strings per
    hypothesis (or one string each); ``hypotheses``: strings."""
    import keras_hub
    import tensorflow as tf

    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    if len(refs) != len(hypotheses):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(refs)} references")
    if not hypotheses:
        raise ValueError("corpus_bleu needs at least one hypothesis")
    metric = keras_hub.metrics.Bleu()
    metric.update_state(tf.ragged.constant(refs), tf.constant(list(hypotheses)))
    return 100.0 * float(metric.result())


def rouge_l(references, hypotheses):
    """Mean ROUGE-L F1 (0-100) over the pairs (keras-hub's RougeL)."""
    import keras_hub
    import tensorflow as tf

    if len(references) != len(hypotheses) or not hypotheses:
        raise ValueError("rouge_l needs as many references as hypotheses, at least one")
    metric = keras_hub.metrics.RougeL()
    metric.update_state(tf.constant(list(references)), tf.constant(list(hypotheses)))
    return 100.0 * float(metric.result()["f1_score"])
