"""Promotion under concurrency, for real: two runs on one fresh store at once promote at most one version, and
the second compares with the first's production version rather than with the base model."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_two_runs_at_once_promote_one_version(tmp_path):
    env = os.environ | {"ZENML_CONFIG_PATH": str(tmp_path / "zenml"), "TUNELINE_CACHE": str(tmp_path / "cache"),
                        "TUNELINE_TEST_PAUSE_PROMOTE": "5"}  # both runs inside promote at once, had there no lock
    procs = [
        subprocess.Popen([sys.executable, "run.py", "--config", "configs/smoke.yaml", "--summary-json",
                          str(tmp_path / f"s{i}.json")], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    summaries = [json.loads((tmp_path / f"s{i}.json").read_text()) for i in range(2)]
    first, second = sorted(summaries, key=lambda s: s["model_version_number"])
    if not first["promoted"]:  # the toy model did not beat the base: nothing to race for
        assert not second["promoted"]
        return
    assert not second["promoted"], "both promoted: the second never saw the first in production"
    assert f"production version {first['model_version']}" in second["promotion_reason"]

    check = subprocess.run(
        [sys.executable, "-c", "from zenml.client import Client; import json, sys; "
         f"print(json.dumps([Client().get_model_version('{first['model_name']}', 'production').number]))"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert json.loads(check.stdout.strip().splitlines()[-1]) == [first["model_version_number"]], check.stderr[-2000:]
