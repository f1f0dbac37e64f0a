"""run.py with faults injected by patching, for tests that race or kill real processes; product code reads no
test switches. `python tests/fault_run.py FAULT[=SECONDS] ... -- RUN.PY ARGS`."""

import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def after(module, name: str, effect) -> None:
    """Replace `module.name` with the original followed by `effect()`."""
    original = getattr(module, name)

    def patched(*args, **kwargs):
        result = original(*args, **kwargs)
        effect()
        return result

    setattr(module, name, patched)


def pause_first_use(seconds: float) -> None:
    """Sleep while the MLflow store is half-made (tables created, migrations not yet run)."""
    import mlflow.store.db.utils as db

    original = db._upgrade_db
    db._upgrade_db = lambda engine: (time.sleep(seconds), original(engine))[1]


def pause_promote(seconds: float) -> None:
    """Sleep right after reading the version in the stage: without the lock two runs would both decide then."""
    from steps import registry

    after(registry, "in_stage", lambda: time.sleep(seconds))


def kill_after_stage(_: float) -> None:
    """SIGKILL right after the stage moves, before MLflow's alias follows, as a killed run would be."""
    from steps import registry

    after(registry, "move_stage", lambda: os.kill(os.getpid(), signal.SIGKILL))


FAULTS = {"pause_first_use": pause_first_use, "pause_promote": pause_promote, "kill_after_stage": kill_after_stage}

if __name__ == "__main__":
    from zenml.utils.source_utils import set_custom_source_root

    set_custom_source_root(str(ROOT))  # the main file is this one, not run.py: point ZenML at the project
    split = sys.argv.index("--")
    for spec in sys.argv[1:split]:
        name, _, seconds = spec.partition("=")
        FAULTS[name](float(seconds or 0))
    os.chdir(ROOT)
    import run

    sys.exit(run.main(sys.argv[split + 1 :]))
