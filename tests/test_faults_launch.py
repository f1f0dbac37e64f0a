"""Launch faults with real processes: a kill during first use, two first runs at once, Ctrl-C or SIGTERM mid-run,
bad input. Each test's run.py processes get a fresh ZenML folder, as on a new machine."""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ["--config", "configs/smoke.yaml", "--prepare-only"]

pytestmark = pytest.mark.slow  # real pipelines, processes or deployments: minutes


def start(zenml_dir: Path, args: list[str], faults: list[str] = ()) -> subprocess.Popen:
    """run.py, or with `faults` injected by tests/fault_run.py."""
    environ = os.environ | {"ZENML_CONFIG_PATH": str(zenml_dir)}
    command = ["tests/fault_run.py", *faults, "--"] if faults else ["run.py"]
    return subprocess.Popen(
        [sys.executable, *command, *args],
        cwd=ROOT,
        env=environ,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


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
    # Read-write: a read-only connection cannot roll back what a killed writer left half-written (a hot journal).
    with sqlite3.connect(db, timeout=30) as con:
        return [status for (status,) in con.execute("SELECT status FROM pipeline_run")]


def test_kill_while_mlflow_creates_its_tables_then_next_run_succeeds(tmp_path):
    from mlflow.store.db.utils import _get_latest_schema_revision

    proc = start(tmp_path, SMOKE, faults=["pause_first_use=60"])
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
    wait_for(lambda: run_statuses(zenml_dir)[len(before) :] == ["running"], every=0.05)
    proc.send_signal(sig)
    code, out, err = finish(proc, timeout=90)
    assert code == 130
    # Whether the run heard the interrupt or was stuck and ended, the supervising process marks it.
    assert re.search(r"error: interrupted; run prepare_data-\S+ stopped and marked failed$", err.strip()), err[-3000:]
    assert "Traceback" not in out + err
    wait_for(lambda: run_statuses(zenml_dir) == before + ["failed"], timeout=60, every=0.2)


# Supervised as run.py's pipeline commands are: the child runs `body`, which says "ready" where the signal should
# land (the supervisor ends a child that has not stopped 3 s after the signal).
CHILD = """
import os, signal, sys, time, weakref
from runner import interrupt, supervise
if not supervise.in_child():
    supervise.GRACE_S = 3
    sys.exit(supervise.supervise())
interrupt.install()
try:
{body}
except KeyboardInterrupt:
    interrupt.exit_now()
print("finished", flush=True)
"""
# The signal lands in a weakref callback, where Python drops the exception it raises (as in SQLAlchemy's during a
# ZenML step): unless it is raised again the child would go on and finish.
DROPPED = """
    class Thing:
        pass
    def gone(ref):
        print("ready", flush=True)
        start = time.monotonic()
        while time.monotonic() - start < 1:
            pass
    thing = Thing()
    ref = weakref.ref(thing, gone)
    del thing
    for _ in range(100):
        time.sleep(0.05)
"""
# Code that swallows every KeyboardInterrupt (or is stuck where none can be raised).
DEAF = """
    while True:
        try:
            print("ready", flush=True)
            time.sleep(10)
        except KeyboardInterrupt:
            pass
"""
ENDED = "tuneline: the run did not stop within 3 s of the signal; ended it"


def supervised(body: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(body=body)],
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.parametrize(
    "body, said",
    [
        (DROPPED, ["error: interrupted before the run started"]),
        (DEAF, [ENDED, "error: interrupted before the run started"]),
    ],
)
def test_an_interrupt_that_is_not_heard_still_stops_the_process(body, said):
    proc = supervised(body)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "finished" not in out
    assert err.strip().splitlines()[-len(said) :] == said, err
    assert "Traceback" not in err


def test_a_child_killed_by_another_kills_its_supervisor_alike():
    proc = supervised(DEAF.replace("time.sleep(10)", "os.kill(os.getpid(), signal.SIGKILL)"))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL and "finished" not in out and not err, err


def test_a_child_whose_supervisor_was_killed_ends_too():
    proc = supervised(DEAF)
    proc.kill()  # the supervisor alone, not its group: the child must notice
    out, err = proc.communicate(timeout=10)  # the pipes close only once the child is gone too
    assert "finished" not in out


@pytest.mark.parametrize(
    "text, args, expected",
    [
        ("", [], "{path}: the config file is empty"),
        (
            "modle:\n  name: x\nparameters:\n  model: {base: tiny-random}\n",
            [],
            "{path}:1: 'modle' is not a run-config key; did you mean 'model'?",
        ),
        (
            "parameters: {}\n",
            ["--set", "training.max_steps=[1"],
            "--set 'training.max_steps=[1': the value is not valid",
        ),
    ],
)
def test_bad_input_is_one_line_naming_it_with_exit_2(tmp_path, text, args, expected):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    code, out, err = finish(start(tmp_path / "zenml", ["--config", str(path), "--prepare-only", *args]), timeout=60)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {expected.format(path=path)}"), err
    assert not (tmp_path / "zenml" / "local_stores").exists()  # refused before anything ran
