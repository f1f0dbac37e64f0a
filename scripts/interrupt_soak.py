"""Interrupt `run.py --prepare-only` (smoke config) at random moments and count what each run ended as.

    scripts/in-venv python scripts/interrupt_soak.py [--runs 20] [--after 0 0.5]

Each run gets a fresh ZenML folder, as on a new machine, and SIGINT or SIGTERM (alternately) a random number of
seconds in `--after` after ZenML records the run as `running`. A run is right when it exits 130 saying it was
stopped and marked failed, and ZenML holds it as `failed`; the count says how many of those stopped on their own
and how many were ended by their supervisor after its grace period (runner/supervise.py). The Ctrl-C test in
tests/test_faults_launch.py sends one signal at one moment; this sends many, to find the moments where an
interrupt was lost or hung the process.
A process still alive 60 s after its signal is reported as hung (with `py-spy dump`, when py-spy is installed).
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.test_faults_launch import SMOKE, run_statuses, start, wait_for  # noqa: E402  (the test's own helpers)

RIGHT = "exit 130, run failed"


def one_run(after: tuple[float, float], sig: signal.Signals) -> str:
    folder = Path(tempfile.mkdtemp(prefix="tuneline-soak-"))
    try:
        proc = start(folder, SMOKE)
        wait_for(lambda: run_statuses(folder) == ["running"], every=0.05)
        time.sleep(random.uniform(*after))
        proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            if py_spy := shutil.which("py-spy"):
                print(subprocess.run([py_spy, "dump", "--pid", str(proc.pid)], capture_output=True, text=True).stdout)
            proc.kill()
            proc.communicate()
            return "hung (killed after 60 s)"
        said = (err.strip().splitlines() or [""])[-1]
        status = wait_for(lambda: run_statuses(folder), timeout=60)[-1]
        if proc.returncode == 130 and "stopped and marked failed" in said and status == "failed":
            return RIGHT + (", ended by its supervisor" if "did not stop within" in err else ", stopped")
        return f"exit {proc.returncode}, run {status}: {said[:120]}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--after", type=float, nargs=2, default=(0.0, 0.5), metavar=("MIN_S", "MAX_S"))
    args = p.parse_args()
    outcomes = Counter()
    for i in range(args.runs):
        sig = (signal.SIGINT, signal.SIGTERM)[i % 2]
        outcome = one_run(tuple(args.after), sig)
        outcomes[outcome] += 1
        print(f"run {i + 1:>3}/{args.runs}  {sig.name:<7}  {outcome}", flush=True)
    print(f"\nsignal {args.after[0]}-{args.after[1]} s after the run started, {args.runs} runs:")
    for outcome, count in outcomes.most_common():
        print(f"{count:>5}  {outcome}")
    return 0 if all(outcome.startswith(RIGHT) for outcome in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
