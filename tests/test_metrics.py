import pytest

from tuneline.metrics import compare, field_table, metric_value, score, taxonomy
from tuneline.tasks import parse_json, parse_viggo

REF = "give_opinion(name[SpellForce 3], rating[poor])"


def test_parse_viggo_structure_and_values_with_parens():
    p = parse_viggo("inform(name[Dirt: Showdown], esrb[E 10+ (for Everyone 10 and Older)], genres[driving/racing, sport])")
    assert p.act == "inform"
    assert ("esrb", "e 10+ (for everyone 10 and older)") in p.fields
    assert ("genres", "driving/racing, sport") in p.fields


@pytest.mark.parametrize("bad", ["", "give_opinion", "give_opinion(name[X]", "give_opinion(name[X] junk)",
                                 "give_opinion(name[X], rating)", "the game is poor"])
def test_parse_viggo_rejects_malformed(bad):
    assert parse_viggo(bad) is None


def test_parse_json():
    assert parse_json('{"a": 1, "b": [1, 2]}').fields == {("a", "1"), ("b", "[1, 2]")}
    assert parse_json('[{"city": "Paris"}, 2]').fields == {("[0]", '{"city": "Paris"}'), ("[1]", "2")}
    assert parse_json("1") is None and parse_json("{oops") is None


def test_unparseable_prediction_misses_every_reference_field():
    row = compare("viggo", "not an mr", REF)
    assert row == {"parsed": False, "exact": False, "act_ok": False, "errors": ["unparseable"],
                   "fields": {"name": "missing", "rating": "missing"}}


def test_slot_order_and_whitespace_do_not_matter():
    assert compare("viggo", "give_opinion( rating[poor],name[SpellForce  3] )", REF)["exact"]


PREDS = [
    REF,                                                   # exact
    "give_opinion(name[SpellForce 3], rating[good])",      # act ok; rating wrong_value
    "inform(name[SpellForce 3], rating[poor], genres[x])", # wrong act; genres extra
    "garbage",                                             # unparseable: name, rating missed
    "give_opinion(name[SpellForce 3])",                    # partial: rating missing
]


def test_hand_computed_metrics():
    m, rows = score("viggo", PREDS, [REF] * 5)
    # tp/fp/fn per example: (2,0,0) (1,1,1) (2,1,0) (0,0,2) (1,0,1) -> tp 6, fp 2, fn 4
    assert m["exact_match"] == pytest.approx(1 / 5)
    assert m["act_accuracy"] == pytest.approx(3 / 5)
    assert m["parse_rate"] == pytest.approx(4 / 5)
    assert m["slot_precision"] == pytest.approx(6 / 8)
    assert m["slot_recall"] == pytest.approx(6 / 10)
    assert m["micro_f1"] == pytest.approx(12 / 18)
    assert m["slot_accuracy"] == pytest.approx(6 / 12)
    # name: tp 4, fn 1 -> f1 8/9; rating: tp 2, fp 1, fn 3 -> 4/8; genres: fp 1 -> 0
    assert m["f1.name"] == pytest.approx(8 / 9)
    assert m["f1.rating"] == pytest.approx(4 / 8)
    assert m["f1.genres"] == 0.0
    assert m["macro_f1"] == pytest.approx((8 / 9 + 4 / 8 + 0) / 3)
    assert taxonomy(rows) == {"unparseable": 1, "wrong_act": 1, "missing": 1, "extra": 1, "wrong_value": 1}
    table = field_table(rows)
    assert table["rating"] == {"support": 5, "tp": 2, "fp": 1, "fn": 3, "precision": 2 / 3, "recall": 2 / 5, "f1": 0.5}
    assert 0 < m["rouge1"] < 1 and set(m) >= {"rouge1", "rouge2", "rougeL", "rougeLsum"}


def test_metric_value_matches_aggregate_on_subsets():
    m, rows = score("viggo", PREDS, [REF] * 5)
    assert metric_value("micro_f1", rows[:2]) == pytest.approx((2 * 3) / (2 * 3 + 1 + 1))


def test_rouge_perfect_and_disjoint():
    assert score("text", ["a b c"], ["a b c"])[0]["rougeL"] == pytest.approx(1.0)
    assert score("text", ["x y z"], ["a b c"])[0]["rouge1"] == 0.0


def test_reference_must_parse():
    with pytest.raises(ValueError, match="reference does not parse"):
        compare("viggo", REF, "broken(")
