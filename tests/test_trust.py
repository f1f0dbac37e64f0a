"""What an unattended nightly run must survive: another run's Ctrl-C, a dead neighbour's leftovers, settings that
could only fail late, a full or read-only disk. Real run.py processes on a real ZenML store."""

import json
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from runner.failures import cause_in_text, one_line
from tests.test_faults_launch import ROOT, SMOKE, finish, run_statuses, start, wait_for
from tuneline.config import ConfigError, load_run_config, model_name_problem

QUICK = ["--config", "configs/smoke.yaml", "--set", "training.max_steps=10", "--set", "evaluation.max_samples=8"]


def run_names(zenml_dir: Path) -> dict[str, str]:
    db = zenml_dir / "local_stores" / "default_zen_store" / "zenml.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return dict(con.execute("SELECT name, status FROM pipeline_run"))


@pytest.mark.slow
def test_ctrl_c_of_one_run_leaves_the_other_to_finish(tmp_path):
    first = start(tmp_path, QUICK)
    wait_for(lambda: run_statuses(tmp_path) == ["running"], every=0.05)
    second = start(tmp_path, QUICK)
    wait_for(lambda: run_statuses(tmp_path).count("running") == 2, every=0.05)
    first.send_signal(signal.SIGINT)
    code, out, err = finish(first)
    assert code == 130, err[-3000:]
    code2, out2, err2 = finish(second)
    assert code2 == 0, err2[-3000:]
    assert "promoted" in out2.lower()  # promote ran and decided, on its merits
    statuses = run_names(tmp_path)
    assert sorted(statuses.values()) == ["completed", "failed"], statuses
    (stopped,) = [name for name, status in statuses.items() if status == "failed"]
    assert err.strip().splitlines()[-1] == f"error: interrupted; run {stopped} stopped and marked failed"


@pytest.mark.slow
def test_a_run_whose_process_was_killed_is_marked_failed_by_the_next(tmp_path):
    killed = start(tmp_path, SMOKE)
    wait_for(lambda: run_statuses(tmp_path) == ["running"], every=0.05)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert run_statuses(tmp_path) == ["running"]
    code, out, err = finish(start(tmp_path, SMOKE))
    assert code == 0, err[-3000:]
    assert run_statuses(tmp_path) == ["failed", "completed"]
    assert "was left running by a process that is gone; marked it failed" in out + err
    assert not list((tmp_path / "tuneline-runs").glob("*.lock"))  # nothing left for a later sweep


@pytest.mark.parametrize("name", ["team:smoke", "a/b", "../up", " ", "tab\there"])
def test_model_names_the_registries_refuse_are_refused_at_load(tmp_path, name):
    assert model_name_problem(name)
    path = tmp_path / "run.yaml"
    path.write_text(f"model:\n  name: {json.dumps(name)}\nparameters:\n  model: {{base: tiny-random}}\n")
    with pytest.raises(ConfigError, match=r"run\.yaml:1: model\.name "):
        load_run_config(path)


@pytest.mark.parametrize("name", ["bob's-smoke", 'say "hi"', "tuneline-viggo", "v1.2 team model"])
def test_names_with_quotes_and_spaces_are_fine(name):
    assert model_name_problem(name) is None


def test_registry_lookup_takes_any_name(tmp_path):
    """The MLflow registry is queried without the user's name in a filter string."""
    import mlflow

    from tuneline.registry import tracking

    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        mlflow.set_experiment("registry-names")  # not an experiment id another test left active
        with mlflow.start_run() as run:
            for name in ("bob's-smoke", 'say "hi"', "other"):
                tracking.mirror_registry(name, "1", run.info.run_id)
            assert tracking.sync_alias("bob's-smoke", "production", "1")
        client = mlflow.tracking.MlflowClient()
        assert str(client.get_model_version_by_alias("bob's-smoke", "production").version) == "1"
        assert len(client.search_model_versions("tags.zenml_version = '1'")) == 3
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


@pytest.mark.parametrize(
    "args, said",
    [
        (["--config", "{bad}", "--prepare-only"], "model.name 'team:smoke' must not contain ':'"),
        (
            ["--config", "configs/smoke.yaml", "--set", "model.device=cuda"],
            "model.device: cuda, but this machine has no",
        ),
    ],
)
@pytest.mark.slow
def test_late_failures_stop_before_the_first_step_with_exit_2(tmp_path, args, said):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "configs" / "smoke.yaml").read_text().replace("name: tuneline-smoke", "name: 'team:smoke'"))
    code, out, err = finish(start(tmp_path / "zenml", [a.format(bad=bad) for a in args]), timeout=120)
    assert code == 2, err[-3000:]
    errors = [line for line in err.strip().splitlines() if line.startswith("error")]
    assert len(errors) == 1 and said in errors[0] and err.strip().endswith(errors[0]), err[-3000:]
    assert run_statuses(tmp_path / "zenml") == []  # no run was started


def test_root_cause_is_found_down_the_chain():
    try:
        try:
            raise OSError(28, "No space left on device", "/store/zenml.db")
        except OSError as inner:
            raise RuntimeError("raised as a result of Query-invoked autoflush; consider ...\n[SQL: ...]") from inner
    except RuntimeError as err:
        assert one_line(err) == "the disk is full (No space left on device: /store/zenml.db)"
    sql = sqlite3.OperationalError("attempt to write a readonly database")
    assert one_line(sql).startswith("the file system is read-only")
    assert cause_in_text("(sqlite3.OperationalError) database or disk is full\n[SQL: INSERT]").startswith(
        "the disk is full"
    )
    assert one_line(ValueError("plain")) == "ValueError: plain"


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of its own (mounting one needs root, as CI and these sessions run)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)]).returncode:
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)])


@pytest.mark.slow
def test_full_and_read_only_disks_end_with_the_cause(small_disk):
    zenml_dir = small_disk / "zenml"
    code, out, err = finish(start(zenml_dir, SMOKE))
    assert code == 0, err[-3000:]
    subprocess.run(["dd", "if=/dev/zero", f"of={small_disk / 'fill'}", "bs=1M", "count=100"], capture_output=True)
    code, out, err = finish(start(zenml_dir, [*SMOKE, "--no-cache"]))
    assert code == 1 and err.strip().splitlines()[-1].startswith("error: the disk is full ("), err[-3000:]
    (small_disk / "fill").unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    code, out, err = finish(start(zenml_dir, SMOKE))
    assert code == 1 and err.strip().splitlines()[-1].startswith("error: the file system is read-only ("), err


@pytest.mark.slow
def test_a_promotion_killed_before_its_stage_moved_does_not_claim_it():
    """The decision is recorded as not yet applied until the stage moves; a version found in the stage with that
    record (killed in between) gets the decision completed by the next promotion."""
    from zenml import log_metadata
    from zenml.client import Client

    from runner.first_use import set_up
    from steps.registry import pending, reconcile
    from tuneline.registry.promotion import PromotionDecision

    set_up()
    client = Client()
    name = "tuneline-trust-pending"
    client.create_model(name)
    killed = client.create_model_version(name)
    decision = PromotionDecision(
        promote=True,
        reason="r",
        reasons=["r"],
        metric="exact_match",
        reference="base model",
        candidate=0.6,
        reference_score=0.1,
        difference=0.5,
        ci_low=0.4,
        ci_high=0.6,
        min_gain=0.0,
        guards={},
        n_examples=10,
    )
    log_metadata(metadata={"promotion": pending(decision)}, model_name=name, model_version=killed.name)
    recorded = client.get_model_version(name, killed.name).run_metadata["promotion"]
    assert recorded["promote"] is False and recorded["stage_moved"] is False
    reconcile(name, "production", None)  # nothing in the stage: nothing to complete
    assert client.get_model_version(name, killed.name).run_metadata["promotion"]["promote"] is False
    killed.set_stage("production", force=True)  # killed right after this
    reconcile(name, "production", client.get_model_version(name, "production"))
    repaired = client.get_model_version(name, killed.name).run_metadata["promotion"]
    assert repaired["promote"] is True and repaired["stage_moved"] is True
