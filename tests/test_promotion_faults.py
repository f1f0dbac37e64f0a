"""Promotion and the cache under faults, for real: `run.py` on the smoke config in subprocesses, on one fresh ZenML
config folder (SQLite store, local artifact store, MLflow store inside it). One scenario serves every test, to keep
to four pipeline runs: two at once, the winner killed inside promote; a cached rerun; a rerun after damage."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# `python -c` has no main file for ZenML to find the project's sources (materializers, the stack's flavors) from.
SOURCES = "import os; from zenml.utils.source_utils import set_custom_source_root; set_custom_source_root(os.getcwd())"
# Printed as one JSON line: each ZenML version's stage, decision and MLflow run; the MLflow registry's versions and
# where its production alias points; for a version and run given as argv[1:], where the version's data and adapter
# artifacts are and what each step of the run did.
STATE = """
import json, sys
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from zenml.client import Client
c = Client()
ml = MlflowClient(tracking_uri=c.active_stack.experiment_tracker.get_tracking_uri())
try:
    alias = ml.get_model_version_by_alias("tuneline-smoke", "production").tags["zenml_version"]
except MlflowException:
    alias = None
out = {"versions": {v.number: {"stage": v.stage, "decided": "promotion" in v.run_metadata,
                               "mlflow_run_id": v.run_metadata.get("mlflow_run_id")}
                    for v in c.list_model_versions("tuneline-smoke")},
       "registry": sorted(v.tags["zenml_version"] for v in ml.search_model_versions("name='tuneline-smoke'")),
       "alias": alias}
if len(sys.argv) > 1:
    v = c.get_model_version("tuneline-smoke", int(sys.argv[1]))
    out["uris"] = {n: v.get_artifact(n).uri for n in ("chat_dataset", "lora_adapter")}
    out["steps"] = {n: s.status.value for n, s in c.get_pipeline_run(sys.argv[2]).steps.items()}
print(json.dumps(out))
"""
# Loads a version's data and adapter as a step would, printing each error.
LOAD = """
import sys
from zenml.client import Client
v = Client().get_model_version("tuneline-smoke", int(sys.argv[1]))
for name in ("chat_dataset", "lora_adapter"):
    try:
        v.get_artifact(name).load()
    except Exception as err:
        print(f"{type(err).__name__}: {err}")
"""

pytestmark = pytest.mark.slow  # real pipelines, processes or deployments: minutes


def _env(state: Path, **extra) -> dict:
    return os.environ | {"ZENML_CONFIG_PATH": str(state / "zenml"), "TUNELINE_CACHE": str(state / "cache")} | extra


def _smoke(state: Path, name: str, *faults: str) -> subprocess.Popen:
    """run.py on the smoke config, with `faults` injected by tests/fault_run.py."""
    args = ["--config", "configs/smoke.yaml", "--summary-json", str(state / f"{name}.json")]
    return subprocess.Popen(
        [sys.executable, "tests/fault_run.py", *faults, "--", *args] if faults else [sys.executable, "run.py", *args],
        cwd=ROOT,
        env=_env(state),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen) -> str:
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out[-3000:]
    return out


def _state(state: Path, summary: dict | None = None) -> dict:
    run = [str(summary["model_version_number"]), summary["zenml_run_id"]] if summary else []
    proc = subprocess.run(
        [sys.executable, "-c", SOURCES + STATE, *run],
        cwd=ROOT,
        env=_env(state),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    """What each step of the scenario printed and left behind."""
    state = tmp_path_factory.mktemp("faults")
    # Both pause inside promote after reading production, so without the lock both would compare with the base
    # and both promote. Whichever promotes is killed right after its stage moves, before the MLflow alias follows.
    pair = [_smoke(state, f"pair{i}", "pause_promote=5", "kill_after_stage") for i in range(2)]
    pair_out = [proc.communicate(timeout=600)[0] for proc in pair]
    survivors = [i for i, proc in enumerate(pair) if proc.returncode == 0]
    after_pair = _state(state)
    rerun_out = _finish(_smoke(state, "rerun"))
    rerun = json.loads((state / "rerun.json").read_text())
    after_rerun = _state(state, rerun)

    # The rerun's cached outputs are the first runs' own: truncate the prepared data, delete the adapter.
    data_file = next(p for p in Path(after_rerun["uris"]["chat_dataset"]).rglob("*.jsonl") if p.stat().st_size)
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    shutil.rmtree(after_rerun["uris"]["lora_adapter"])
    loads = subprocess.run(
        [sys.executable, "-c", SOURCES + LOAD, str(rerun["model_version_number"])],
        cwd=ROOT,
        env=_env(state),
        capture_output=True,
        text=True,
        timeout=300,
    )
    repaired_out = _finish(_smoke(state, "repaired"))  # the run itself checks the cache before reusing it
    repaired = json.loads((state / "repaired.json").read_text())
    return {
        "pair_codes": sorted(proc.returncode for proc in pair),
        "pair_out": pair_out,
        "loser": json.loads((state / f"pair{survivors[0]}.json").read_text()) if survivors else None,
        "loser_out": pair_out[survivors[0]] if survivors else "",
        "after_pair": after_pair,
        "rerun_out": rerun_out,
        "rerun": rerun,
        "after_rerun": after_rerun,
        "loads": loads.stdout + loads.stderr,
        "repaired_out": repaired_out,
        "repaired": repaired,
        "after_repair": _state(state, repaired),
    }


def test_two_runs_at_once_promote_one_version(faults):
    assert faults["pair_codes"] == [-signal.SIGKILL, 0], "both promoted (both killed): " + "\n".join(
        out[-2000:] for out in faults["pair_out"]
    )
    winner = next(n for n, v in faults["after_pair"]["versions"].items() if v["stage"] == "production")
    assert {n: v["stage"] for n, v in faults["after_pair"]["versions"].items()} == {"1": None, "2": None} | {
        winner: "production"
    }
    loser = faults["loser"]
    assert not loser["promoted"] and loser["stage"] is None
    assert f"production version {winner}" in loser["promotion_reason"], "the loser compared with the base model"


def test_kill_after_stage_leaves_decision_and_next_promotion_repairs_alias(faults):
    state = faults["after_pair"]
    winner = next(n for n, v in state["versions"].items() if v["stage"] == "production")
    # Decision, MLflow run and registry entry were written before the stage moved; only the alias was left behind,
    # and the next promotion of the model (the loser's, waiting on the lock) moved it.
    assert state["versions"][winner]["decided"] and state["versions"][winner]["mlflow_run_id"]
    assert state["registry"] == ["1", "2"] and state["alias"] == winner
    # Registry versions are numbered in the order the two runs registered them, which need not be ZenML's.
    assert re.search(
        r"repaired a promotion that was interrupted: MLflow alias 'production' moved to registry "
        rf"version \d+ \(ZenML version {winner}\)",
        faults["loser_out"],
    ), faults["loser_out"][-4000:]
    assert faults["after_rerun"]["alias"] == winner and "repaired a promotion" not in faults["rerun_out"]


def test_cached_rerun_has_its_mlflow_run_and_registry_entry(faults):
    rerun, state = faults["rerun"], faults["after_rerun"]
    assert state["steps"]["train_lora"] == "cached"
    assert rerun["mlflow_run_id"] in {v["mlflow_run_id"] for v in faults["after_pair"]["versions"].values()}
    assert state["versions"][str(rerun["model_version_number"])]["mlflow_run_id"] == rerun["mlflow_run_id"]
    assert str(rerun["model_version_number"]) in state["registry"]


def test_damaged_artifact_fails_to_load_naming_itself(faults):
    loads = faults["loads"]
    assert "DamagedArtifact: artifact 'chat_dataset' version" in loads and "bytes now" in loads
    assert "DamagedArtifact: artifact 'lora_adapter' version" in loads and "(deleted)" in loads
    assert "JSONDecodeError" not in loads and "runner.cache_guard" in loads


def test_damaged_cached_artifacts_are_not_reused(faults):
    out = faults["repaired_out"]
    assert "step 'prepare_dataset' will run again" in out and "artifact 'chat_dataset'" in out
    assert "step 'train_lora' will run again" in out and "artifact 'lora_adapter'" in out and "(deleted)" in out
    # Each step then ran again, or reused the other first run's intact outputs (both of them computed the same).
    new, damaged = faults["after_repair"], faults["after_rerun"]
    assert {new["steps"][s] for s in ("prepare_dataset", "train_lora")} <= {"completed", "cached"}
    assert new["uris"]["chat_dataset"] != damaged["uris"]["chat_dataset"]
    assert new["uris"]["lora_adapter"] != damaged["uris"]["lora_adapter"]
    assert Path(new["uris"]["lora_adapter"], "files").is_dir()
    assert faults["repaired"]["mlflow_run_id"] not in (None, faults["rerun"]["mlflow_run_id"])
