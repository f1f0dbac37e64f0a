"""Interruption: a training run killed mid-way (SIGKILL, no clean-up) and started again with `--resume` continues
from its last checkpoint and ends where an uninterrupted run ends."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.test_pipeline import ROOT, run_cli

pytestmark = pytest.mark.slow  # real pipelines, processes or deployments: minutes

SAVE_EVERY = 20


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    raw = yaml.safe_load((ROOT / "configs/smoke.yaml").read_text())
    raw["model"]["name"] = "tuneline-resume"
    raw["parameters"]["training"] |= {"save_steps": SAVE_EVERY, "logging_steps": 10}
    path = tmp_path_factory.mktemp("resume") / "resume.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _checkpoints() -> list[Path]:
    """Complete checkpoint copies in the local artifact store, wherever ZenML put it."""
    root = Path(os.environ["ZENML_CONFIG_PATH"])
    return sorted(root.glob("**/tuneline-checkpoints/*/checkpoint-*/COMPLETE"))


def _train_summary(summary: dict) -> dict:
    from zenml.client import Client

    run = Client().get_pipeline_run(summary["zenml_run_id"])
    return run.steps["train_lora"].outputs["lora_adapter"][0].load().train_summary


def _kill_after_checkpoint(config: Path, step: int, timeout: float = 400) -> None:
    proc = subprocess.Popen(
        [sys.executable, "run.py", "--config", str(config), "--no-cache"],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while not any(p.parent.name == f"checkpoint-{step}" for p in _checkpoints()):
            assert proc.poll() is None, "the run ended before it could be interrupted"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_killed_run_resumes_to_the_same_loss(config, tmp_path):
    straight, _ = run_cli("--config", str(config), tmp_path=tmp_path)
    reference = _train_summary(straight)
    assert reference["resumed_from_step"] is None
    assert not _checkpoints(), "a finished run leaves no checkpoints behind"

    _kill_after_checkpoint(config, step=3 * SAVE_EVERY)
    left = _checkpoints()
    assert left and all(int(p.parent.name.split("-")[1]) % SAVE_EVERY == 0 for p in left)
    last = max(int(p.parent.name.split("-")[1]) for p in left)

    resumed, proc = run_cli("--config", str(config), "--resume", tmp_path=tmp_path)
    after = _train_summary(resumed)
    print(
        f"killed after checkpoint {last}; final loss straight {reference['final_loss']:.6f} resumed "
        f"{after['final_loss']:.6f}; eval loss straight {reference['eval_loss']:.6f} resumed {after['eval_loss']:.6f}"
    )
    assert after["resumed_from_step"] == last >= 3 * SAVE_EVERY
    assert after["steps"] == reference["steps"] == 120
    assert after["final_loss"] == pytest.approx(reference["final_loss"], rel=1e-3)
    assert after["eval_loss"] == pytest.approx(reference["eval_loss"], rel=1e-3)
    assert not _checkpoints()


def test_resume_without_checkpoints_names_the_fix(config, tmp_path):
    _, proc = run_cli(
        "--config", str(config), "--resume", "--set", "training.max_steps=7", tmp_path=tmp_path, expect_ok=False
    )
    assert proc.returncode == 1
    assert "--resume: no complete checkpoint" in proc.stderr and "training.save_steps" in proc.stderr
