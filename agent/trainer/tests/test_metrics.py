"""The text metrics on answers whose scores are known by hand (not only their ranges)."""

import pytest
from tunefleet_trainer.evaluate import normalise, text_metrics


def test_identical_answers_score_full_marks():
    assert text_metrics(["a b c d", "x y"], ["a b c d", "x y"]) == pytest.approx((100.0, 1.0))


def test_disjoint_answers_score_zero():
    assert text_metrics(["p q r s"], ["a b c d"]) == pytest.approx((0.0, 0.0))


def test_a_partial_match_gives_the_hand_computed_scores():
    # n-gram precisions 6/7, 5/6, 4/5, 3/4 and no brevity penalty: BLEU = 100 * (3/7) ** (1/4)
    bleu, _ = text_metrics(["the cat sat on the mat today"], ["the cat sat on the mat"])
    assert bleu == pytest.approx(100 * (3 / 7) ** 0.25, abs=1e-6)
    # the longest common subsequence is 5 of 6 tokens each way: F1 = 5/6
    _, rouge = text_metrics(["the cat sat on the mat"], ["the cat is on the mat"])
    assert rouge == pytest.approx(5 / 6, abs=1e-9)


def test_exact_match_ignores_case_and_spacing_only():
    assert normalise("  The  PNG\n") == normalise("the png")
    assert normalise("png.") != normalise("png")
