import pytest

from tuneline.evaluate.calibration import (
    Threshold,
    accuracy_at_coverage,
    auroc,
    calibration_metrics,
    coverage_curve,
    ece,
    pick_threshold,
    reliability,
    serving_threshold,
)
from tuneline.generate.confidence import ANSWER_MEASURE


def test_ece_and_reliability_by_hand():
    conf, right = [0.9, 0.9, 0.1, 0.1], [True, False, False, False]
    # bin 0.9-1.0: confidence 0.9, right 0.5; bin 0.1-0.2: confidence 0.1, right 0 -> (2 * 0.4 + 2 * 0.1) / 4
    assert reliability(conf, right) == [(0.1, 0.2, 2, 0.1, 0.0), (0.9, 1.0, 2, 0.9, 0.5)]
    assert ece(conf, right) == pytest.approx(0.25)
    assert ece([1.0, 0.0], [True, False]) == 0.0  # 1.0 falls in the top bin


def test_auroc_counts_pairs_and_ties_half():
    # right 0.9 and 0.7 vs wrong 0.8 and 0.6: 3 of 4 pairs ordered right above wrong
    assert auroc([0.9, 0.8, 0.7, 0.6], [True, False, True, False]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5, 0.2], [True, False, False]) == pytest.approx(0.75)  # one tie, one win
    assert auroc([0.3, 0.9], [True, True]) is None


def test_coverage_curve_and_accuracy_at_coverage():
    conf, right = [0.9, 0.8, 0.8, 0.3], [True, True, False, False]
    assert coverage_curve(conf, right) == [
        Threshold(0.9, 1.0, 0.25),
        Threshold(0.8, pytest.approx(2 / 3), 0.75),
        Threshold(0.3, 0.5, 1.0),
    ]
    assert accuracy_at_coverage(conf, right, 0.5) == 1.0 and accuracy_at_coverage(conf, right, 1.0) == 0.5


def test_threshold_is_the_lowest_that_reaches_the_target():
    conf, right = [0.9, 0.8, 0.7, 0.6, 0.5], [False, True, True, True, False]
    # accepted precision from the top: 0, 1/2, 2/3, 3/4, 3/5; precision is not monotone in the threshold
    assert pick_threshold(conf, right, 0.7) == Threshold(0.6, 0.75, 0.8)
    assert pick_threshold(conf, right, 0.6) == Threshold(0.5, 0.6, 1.0)
    assert pick_threshold(conf, right, 0.95) is None
    preds = [{"confidence": c, "exact": r} for c, r in zip(conf, right)]
    assert serving_threshold(preds, "auto", 0.7) == {
        "min_confidence": 0.6,
        "precision": 0.75,
        "coverage": 0.8,
        "target_precision": 0.7,
        "setting": "auto",
        "n_examples": 5,
        "measure": ANSWER_MEASURE,
    }
    assert serving_threshold(preds, "auto", 0.95)["min_confidence"] is None
    fixed = serving_threshold(preds, 0.75, 0.95)
    assert (fixed["min_confidence"], fixed["precision"], fixed["coverage"]) == (0.75, 0.5, 0.4)


def test_calibration_metrics_cover_answers_and_fields():
    preds = [
        {
            "confidence": 0.9,
            "exact": True,
            "act_ok": True,
            "act_confidence": 0.95,
            "fields": {"name": "tp"},
            "field_confidence": {"name": 0.9},
        },
        {
            "confidence": 0.2,
            "exact": False,
            "act_ok": True,
            "act_confidence": 0.9,
            "fields": {"name": "wrong_value", "rating": "missing"},
            "field_confidence": {"name": 0.2},
        },
    ]
    m = calibration_metrics(preds)
    assert m["calibration.auroc"] == 1.0 and m["calibration.ece"] == pytest.approx((0.1 + 0.2) / 2)
    # fields: act 0.95 right, act 0.9 right, name 0.9 right, name 0.2 wrong
    assert m["calibration.field_auroc"] == 1.0
    assert m["calibration.field_ece"] == pytest.approx((abs(1 - (0.95 + 0.9 + 0.9) / 3) * 3 + 0.2) / 4)
    assert calibration_metrics([{"exact": True}]) == {}  # evaluated before confidences
