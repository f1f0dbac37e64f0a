import pytest

from tuneline.metrics import compare, score
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
    assert parse_json("[1]") is None and parse_json("{oops") is None


def test_compare_counts_unparseable_as_wrong():
    row = compare("viggo", "not an mr", REF)
    assert row == {"parsed": False, "exact": False, "act_ok": False, "matched": 0, "n_pred": 0, "n_ref": 2}


def test_slot_order_and_whitespace_do_not_matter():
    assert compare("viggo", "give_opinion( rating[poor],name[SpellForce  3] )", REF)["exact"]


def test_score_hand_computed():
    preds = [
        REF,                                                   # exact: 2 matched of 2
        "give_opinion(name[SpellForce 3], rating[good])",      # act ok, 1 matched, 1 wrong value
        "inform(name[SpellForce 3], rating[poor], genres[x])", # wrong act, 2 matched, 1 extra
        "garbage",                                             # unparseable: 0 of 2
    ]
    m, rows = score("viggo", preds, [REF] * 4)
    assert m["exact_match"] == pytest.approx(1 / 4)
    assert m["act_accuracy"] == pytest.approx(2 / 4)
    assert m["parse_rate"] == pytest.approx(3 / 4)
    matched, predicted, reference = 2 + 1 + 2 + 0, 2 + 2 + 3 + 0, 8
    assert m["slot_precision"] == pytest.approx(matched / predicted)
    assert m["slot_recall"] == pytest.approx(matched / reference)
    assert m["slot_accuracy"] == pytest.approx(matched / (predicted + reference - matched))
    assert m["rouge1"] < 1.0 and set(m) >= {"rouge1", "rouge2", "rougeL", "rougeLsum"}


def test_rouge_perfect_and_disjoint():
    assert score("text", ["a b c"], ["a b c"])[0]["rougeL"] == pytest.approx(1.0)
    assert score("text", ["x y z"], ["a b c"])[0]["rouge1"] == 0.0


def test_reference_must_parse():
    with pytest.raises(ValueError, match="reference does not parse"):
        compare("viggo", REF, "broken(")
