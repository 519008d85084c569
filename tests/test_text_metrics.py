import pytest

from keras_zoo.text_metrics import corpus_bleu, rouge_l

REFS = ["Datei %s konnte nicht geöffnet werden.", "Zugriff verweigert", "Unbekannte Option »--%s«",
        "Der Server hat die Verbindung unerwartet geschlossen.", "Speichern Sie das Dokument?"]
HYPS = ["Datei %s konnte nicht gelesen werden.", "Zugriff verweigert", "Unbekannte Option --%s",
        "Der Server schloss die Verbindung.", "Dokument speichern?"]


def test_bleu_equals_sacrebleu_on_the_same_hypotheses():
    import sacrebleu  # the reference implementation (test extra)
    expected = sacrebleu.corpus_bleu(HYPS, [REFS]).score
    assert corpus_bleu(REFS, HYPS) == pytest.approx(expected, abs=1e-3)
    assert corpus_bleu(REFS, REFS) == pytest.approx(100.0)


def test_rouge_l_is_one_hundred_for_identical_text_and_lower_otherwise():
    assert rouge_l(REFS, REFS) == pytest.approx(100.0)
    assert 0 < rouge_l(REFS, HYPS) < 100


def test_mismatched_lists_fail_clearly():
    with pytest.raises(ValueError, match="5 hypotheses but 4 references"):
        corpus_bleu(REFS[:4], HYPS)
