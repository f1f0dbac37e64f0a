from tuneline.promotion import decide

BASE = {"exact_match": 0.0}


def test_first_version_promoted_when_it_beats_base():
    d = decide("exact_match", {"exact_match": 0.3}, BASE)
    assert d.promote and "no production version" in d.reason


def test_first_version_not_promoted_when_no_better_than_base():
    assert not decide("exact_match", {"exact_match": 0.0}, BASE).promote


def test_beats_production():
    d = decide("exact_match", {"exact_match": 0.5}, BASE, {"exact_match": 0.4}, "3")
    assert d.promote and d.production == 0.4 and "version 3" in d.reason


def test_tie_and_worse_do_not_promote():
    assert not decide("exact_match", {"exact_match": 0.4}, BASE, {"exact_match": 0.4}, "3").promote
    assert not decide("exact_match", {"exact_match": 0.3}, BASE, {"exact_match": 0.4}, "3").promote


def test_incomparable_production_is_kept():
    d = decide("exact_match", {"exact_match": 0.9}, BASE, None, "3", production_comparable=False)
    assert not d.promote and "different test set" in d.reason
