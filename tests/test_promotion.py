"""Promotion against a reference on the same examples: better, worse, tied, noisy, and a guarded regression."""

import pytest

from tuneline.config import PromotionConfig
from tuneline.evaluate.metrics import score
from tuneline.registry.promotion import decide, paired_bootstrap

REF = "give_opinion(name[Doom], rating[good])"
RIGHT, WRONG = REF, "garbage"


def rows(n_right: int, n: int = 100, pred_right=RIGHT, pred_wrong=WRONG):
    return score("viggo", [pred_right] * n_right + [pred_wrong] * (n - n_right), [REF] * n)[1]


CFG = PromotionConfig(guarded_metrics=[])


def test_clearly_better_is_promoted():
    d = decide(CFG, rows(60), rows(20), "production version 1", "1")
    assert d.promote and d.ci_low > 0 and d.difference == pytest.approx(0.4)
    assert d.reason.startswith("promote:") and "production version 1" in d.reason


def test_worse_is_kept():
    d = decide(CFG, rows(20), rows(60), "production version 1", "1")
    assert not d.promote and d.ci_high < 0


def test_tie_is_kept():
    same = rows(50)
    d = decide(CFG, same, same, "base model")
    assert not d.promote and d.difference == 0 and d.ci_low == 0 and d.ci_high == 0


def test_noisy_gain_is_kept():
    """One more right answer in 20 examples: a real but tiny gain whose interval includes zero."""
    d = decide(CFG, rows(11, n=20), rows(10, n=20), "production version 1")
    assert d.difference > 0 and d.ci_low <= 0 and not d.promote


def test_min_gain_raises_the_bar():
    cand, ref = rows(60), rows(50)
    assert decide(CFG, cand, ref, "x").promote
    assert not decide(PromotionConfig(guarded_metrics=[], min_gain=0.05), cand, ref, "x").promote


def test_guarded_field_regression_blocks_promotion():
    better_exact_worse_rating = score("viggo", [RIGHT] * 60 + ["give_opinion(name[Doom])"] * 40, [REF] * 100)[1]
    reference = score("viggo", [RIGHT] * 50 + ["give_opinion(name[Doom], rating[good], genres[x])"] * 50, [REF] * 100)[
        1
    ]
    d = decide(PromotionConfig(), better_exact_worse_rating, reference, "production version 1")
    assert d.ci_low > 0 and not d.promote
    assert not d.guards["f1.rating"].ok and d.guards["f1.name"].ok
    assert "guard f1.rating (support 100) drops" in d.reason


def test_bootstrap_is_paired_and_seeded():
    a, b = rows(55), rows(45)
    assert paired_bootstrap("exact_match", a, b, 500, 0) == paired_bootstrap("exact_match", a, b, 500, 0)
    with pytest.raises(ValueError, match="same examples"):
        paired_bootstrap("exact_match", a, b[:-1], 100, 0)


def test_mlflow_alias_follows_zenml_stage_and_is_repaired(tmp_path, monkeypatch):
    """A real local MLflow store: the registry entry is made once per ZenML version, and `sync_alias` moves a stale
    alias to the version in the stage, or removes it when no version holds the stage."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from tuneline.registry import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    with mlflow.start_run() as run:
        tracking.log_text("weights", "adapter/README")
        for zenml_version in ("1", "2", "1"):
            tracking.mirror_registry("m", zenml_version, run.info.run_id)
        entries = {v.tags["zenml_version"]: v.version for v in client.search_model_versions("name='m'")}
        assert sorted(entries) == ["1", "2"]
        assert tracking.sync_alias("m", "production", "1") == (
            f"MLflow alias 'production' moved to registry version {entries['1']} (ZenML version 1)"
        )
        assert tracking.sync_alias("m", "production", "1") is None  # already agreeing: nothing to repair
        assert "moved to registry version" in tracking.sync_alias("m", "production", "2")
        assert client.get_model_version_by_alias("m", "production").version == entries["2"]
        assert tracking.sync_alias("m", "production", None) == (
            f"MLflow alias 'production' removed from registry version {entries['2']}: no ZenML version is in "
            "'production'"
        )
        assert "production" not in client.get_registered_model("m").aliases
