"""The translation recipe's word-by-word dictionary floor: Dice scores, and
ties broken the same way whatever the set order (PYTHONHASHSEED)."""

import itertools

from experiments.recipes.translation import dictionary_baseline


def test_dictionary_picks_the_highest_dice_score_and_breaks_ties_by_order():
    pairs = [("the file", "die Datei"), ("a file", "eine Datei"), ("the key", "der Schlüssel")]
    translate = dictionary_baseline(pairs)
    assert translate("file") == "Datei"  # Dice 2*2/(2+2) = 1: beats every other word
    # "key" co-occurs once with "der" and once with "Schlüssel": a tie at Dice 1
    # (and at one co-occurrence): the first in sorted order wins, every order.
    tied = [("key", "der Schlüssel")]
    for order in itertools.permutations(["der", "Schlüssel"]):
        assert dictionary_baseline([("key", " ".join(order))])("key") == "Schlüssel"
    assert dictionary_baseline(tied)("key, key!") == "Schlüssel , Schlüssel !"
    assert translate("unknown words stay") == "unknown words stay"
