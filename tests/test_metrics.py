import pytest

from tuneline.evaluate.metrics import compare, field_table, invented_fields, metric_value, score, taxonomy
from tuneline.tasks import parse_json, parse_viggo

REF = "give_opinion(name[SpellForce 3], rating[poor])"


def test_parse_viggo_structure_and_values_with_parens():
    p = parse_viggo(
        "inform(name[Dirt: Showdown], esrb[E 10+ (for Everyone 10 and Older)], genres[driving/racing, sport])"
    )
    assert p.act == "inform"
    assert ("esrb", "e 10+ (for everyone 10 and older)") in p.fields
    assert ("genres", "driving/racing, sport") in p.fields


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "give_opinion",
        "give_opinion(name[X]",
        "give_opinion(name[X] junk)",
        "give_opinion(name[X], rating)",
        "the game is poor",
    ],
)
def test_parse_viggo_rejects_malformed(bad):
    assert parse_viggo(bad) is None


def test_parse_json():
    from tuneline.config import JsonMatch

    assert parse_json('{"a": 1, "b": [2, 1]}').fields == {("a", "1"), ("b", '["1", "2"]')}  # a list is a set
    in_order = JsonMatch(lists_as_sets=False)
    assert parse_json('[{"city": "Paris"}, 2]', in_order).fields == {("[0].city", "paris"), ("[1]", "2")}
    assert parse_json("1") is None and parse_json("{oops") is None


def test_unparseable_prediction_misses_every_reference_field():
    row = compare("viggo", "not an mr", REF)
    assert row == {
        "parsed": False,
        "exact": False,
        "act_ok": False,
        "errors": ["unparseable"],
        "fields": {"name": "missing", "rating": "missing"},
    }


def test_slot_order_and_whitespace_do_not_matter():
    assert compare("viggo", "give_opinion( rating[poor],name[SpellForce  3] )", REF)["exact"]


PREDS = [
    REF,  # exact
    "give_opinion(name[SpellForce 3], rating[good])",  # act ok; rating wrong_value
    "inform(name[SpellForce 3], rating[poor], genres[x])",  # wrong act; genres extra
    "garbage",  # unparseable: name, rating missed
    "give_opinion(name[SpellForce 3])",  # partial: rating missing
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
    # genres is only ever predicted (fp 1): an invented field, reported apart, not an F1 of 0 in macro_f1
    assert "f1.genres" not in m and invented_fields(rows) == {"genres": 1}
    assert m["macro_f1"] == pytest.approx((8 / 9 + 4 / 8) / 2)
    assert taxonomy(rows) == {
        "unparseable": 1,
        "duplicate_key": 0,
        "wrong_act": 1,
        "missing": 1,
        "extra": 1,
        "wrong_value": 1,
    }
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


# --- task json: what exact_match and the per-field scores mean (issue 13) -------------------------------------

JSON_REF = '{"intent": "book", "slots": {"date": "Friday", "people": 3, "extras": ["window", "quiet"]}}'


@pytest.mark.parametrize(
    "prediction",
    [
        JSON_REF,
        '{"slots": {"people": "3", "date": " friday ", "extras": ["quiet", "window"]}, "intent": "Book"}',
        "```json\n" + JSON_REF + "\n```",
        "Here is the JSON:\n" + JSON_REF,
    ],
)
def test_json_answers_equal_under_the_default_normalization(prediction):
    row = compare("json", prediction, JSON_REF)
    assert row["exact"] and set(row["fields"]) == {"intent", "slots.date", "slots.people", "slots.extras"}


@pytest.mark.parametrize(
    "option, prediction, field",
    [
        (
            "case_sensitive",
            '{"intent": "Book", "slots": {"date": "Friday", "people": 3, "extras": ["window", "quiet"]}}',
            "intent",
        ),
        (
            "numbers_as_strings",
            '{"intent": "book", "slots": {"date": "Friday", "people": "3", "extras": ["window", "quiet"]}}',
            "slots.people",
        ),
    ],
)
def test_json_normalization_options_can_be_turned_off(option, prediction, field):
    from tuneline.config import JsonMatch

    default_on = option == "numbers_as_strings"
    strict = JsonMatch(**{option: not default_on})
    assert compare("json", prediction, JSON_REF)["exact"]
    assert compare("json", prediction, JSON_REF, strict)["fields"][field] == "wrong_value"


def test_json_lists_as_items_when_order_matters():
    from tuneline.config import JsonMatch

    swapped = '{"intent": "book", "slots": {"date": "Friday", "people": 3, "extras": ["quiet", "window"]}}'
    row = compare("json", swapped, JSON_REF, JsonMatch(lists_as_sets=False))
    assert row["fields"]["slots.extras[0]"] == "wrong_value" and not row["exact"]


def test_json_duplicate_key_is_an_error_not_the_last_value():
    from tuneline.tasks import reference_problem

    row = compare("json", '{"intent": "cancel", "intent": "book"}', '{"intent": "book"}')
    assert not row["parsed"] and row["errors"] == ["unparseable", "duplicate_key"]
    assert "duplicate key 'intent'" in reference_problem("json", '{"intent": "a", "intent": "b"}')


def test_rare_fields_are_not_guarded_and_guards_show_support():
    from tuneline.config import PromotionConfig
    from tuneline.registry.promotion import decide

    refs = ['{"a": "x", "rare": "y"}'] + ['{"a": "x"}'] * 39
    reference = score("json", refs, refs)[1]  # production got everything right
    candidate = score("json", ['{"a": "x"}'] * 40, refs)[1]  # misses the one rare field
    strict = decide(PromotionConfig(min_support=1), candidate, reference, "p")
    assert not strict.guards["f1.rare"].ok  # 1.0 -> 0.0 on one example
    d = decide(PromotionConfig(min_support=10), candidate, reference, "p")
    assert "f1.rare" not in d.guards and d.guards["f1.a"].support == 40


def test_text_task_scores_against_every_reference_of_an_input():
    refs = ["Place 1 serves Thai food.", "Thai food is served at Place 1.", "At Place 1 you can eat Thai."]
    m, rows = score("text", ["Thai food is served at Place 1.", "Place 1 serves Thai food"], [refs, refs])
    assert m["exact_match"] == pytest.approx(1 / 2) and rows[0]["best"] == 1
    single = score("text", ["Thai food is served at Place 1."], [refs[0]])[0]
    assert m["rougeL"] > single["rougeL"]  # the best reference, not the first
