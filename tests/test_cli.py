"""run.py: one subcommand per job, the old flags still accepted, every error one line with its exit code."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from run import EXIT_CODES, exit_code, parse_args

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "argv, command, extra",
    [
        (["--config", "c.yaml"], "train", {}),
        (["--config", "c.yaml", "--prepare-only"], "prepare", {}),
        (["--config", "c.yaml", "--evaluate-only", "--model-version", "base"], "evaluate", {"model_version": "base"}),
        (["--config", "c.yaml", "--export", "--model-version", "3", "--out", "m"], "export", {"model_version": "3"}),
        (["--config", "c.yaml", "--schedule", "0 3 * * 0"], "schedule", {"cron": "0 3 * * 0"}),
        (["train", "--config", "c.yaml", "--resume"], "train", {"resume": True}),
        (["schedule", "--config", "c.yaml", "--cron", "0 3 * * 0"], "schedule", {"cron": "0 3 * * 0"}),
        (["serve", "--config", "c.yaml", "--stop"], "serve", {"stop": True, "model_version": "production"}),
    ],
)
def test_subcommands_and_the_old_flags_parse_alike(argv, command, extra):
    args = parse_args(argv)
    assert args.command == command and Path(args.config).name == "c.yaml"
    assert {k: getattr(args, k) for k in extra} == extra


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "c.yaml", "--prepare-only", "--evaluate-only"],
        ["evaluate", "--config", "c.yaml"],  # no --model-version
        ["schedule", "--config", "c.yaml", "--resume"],
    ],
)
def test_bad_arguments_exit_2(argv):
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2


def test_every_error_class_in_the_table_exists_and_maps():
    import importlib

    for module, name, code in EXIT_CODES:
        cls = getattr(importlib.import_module(module), name)
        assert exit_code(cls("x")) == code
    assert exit_code(RuntimeError("x")) is None


def run(*argv: str, zenml_dir: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"ZENML_CONFIG_PATH": str(zenml_dir)}
    return subprocess.run(
        [sys.executable, "run.py", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )


@pytest.mark.slow
def test_serve_stop_checks_the_config_and_says_when_nothing_is_deployed(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("modle:\n  name: x\nparameters: {}\n")
    bad = run("serve", "--config", str(typo), "--stop", zenml_dir=tmp_path / "zenml")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        f"error: {typo}:1: 'modle' is not a run-config key; did you mean 'model'?"
    ]
    nothing = run("serve", "--config", "configs/smoke.yaml", "--stop", zenml_dir=tmp_path / "zenml")
    assert nothing.returncode == 1 and "Traceback" not in nothing.stderr
    assert nothing.stderr.strip().splitlines()[-1] == (
        "error: nothing to stop: no deployment named 'tuneline-smoke-extract' (see `zenml deployment list`)"
    )
