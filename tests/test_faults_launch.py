"""Launch faults with real processes: a kill during first use, two first runs at once, Ctrl-C or SIGTERM mid-run,
bad input. Each test's run.py processes get a fresh ZenML folder, as on a new machine."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ["--config", "configs/smoke.yaml", "--prepare-only"]


def start(zenml_dir: Path, args: list[str], **env) -> subprocess.Popen:
    environ = os.environ | {"ZENML_CONFIG_PATH": str(zenml_dir)} | env
    return subprocess.Popen([sys.executable, "run.py", *args], cwd=ROOT, env=environ, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_for(predicate, timeout: float = 120, every: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(every)
    raise AssertionError("timed out")


def run_statuses(zenml_dir: Path) -> list[str]:
    db = zenml_dir / "local_stores" / "default_zen_store" / "zenml.db"
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return [status for (status,) in con.execute("SELECT status FROM pipeline_run")]


def test_kill_while_mlflow_creates_its_tables_then_next_run_succeeds(tmp_path):
    from mlflow.store.db.utils import _get_latest_schema_revision

    proc = start(tmp_path, SMOKE, TUNELINE_TEST_PAUSE_FIRST_USE="60")
    wait_for(lambda: list(tmp_path.glob("local_stores/*/mlflow.db*")))  # the store's file appears: tables begin
    os.killpg(proc.pid, signal.SIGKILL)  # the run and anything it forked, as a killed terminal would
    proc.communicate()

    code, out, err = finish(start(tmp_path, SMOKE))
    assert code == 0, err[-3000:]
    assert "quarantined share" in out
    (store,) = tmp_path.glob("local_stores/*/mlflow.db")
    with sqlite3.connect(store) as con:
        assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] == _get_latest_schema_revision()


def test_two_first_runs_at_once_both_succeed(tmp_path):
    procs = [start(tmp_path, SMOKE) for _ in range(2)]
    results = [finish(p) for p in procs]
    for code, out, err in results:
        assert code == 0, err[-3000:]
        assert "quarantined share" in out
    assert run_statuses(tmp_path).count("completed") == 2


@pytest.fixture(scope="module")
def zenml_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("zenml")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_kill_stops_the_run_and_marks_it_failed(zenml_dir, sig):
    before = run_statuses(zenml_dir)
    proc = start(zenml_dir, SMOKE)
    wait_for(lambda: run_statuses(zenml_dir)[len(before):] == ["running"], every=0.05)
    proc.send_signal(sig)
    code, out, err = finish(proc, timeout=60)
    assert code == 130
    assert "error: interrupted; run prepare_data-" in err and "stopped and marked failed" in err
    assert "Traceback" not in out + err
    assert run_statuses(zenml_dir) == before + ["failed"]


@pytest.mark.parametrize("text, args, expected", [
    ("", [], "{path}: the config file is empty"),
    ("modle:\n  name: x\nparameters:\n  model: {base: tiny-random}\n", [],
     "{path}:1: 'modle' is not a run-config key; did you mean 'model'?"),
    ("parameters: {}\n", ["--set", "training.max_steps=[1"], "--set 'training.max_steps=[1': the value is not valid"),
])
def test_bad_input_is_one_line_naming_it_with_exit_2(tmp_path, text, args, expected):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    code, out, err = finish(start(tmp_path / "zenml", ["--config", str(path), "--prepare-only", *args]), timeout=60)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {expected.format(path=path)}"), err
    assert not (tmp_path / "zenml" / "local_stores").exists()  # refused before anything ran
