"""Tests never reach a hub, and ZenML/MLflow state lives in a per-session temporary folder."""

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_STATE = Path(tempfile.mkdtemp(prefix="tuneline-tests-"))

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["ZENML_ANALYTICS_OPT_IN"] = "false"
os.environ["ZENML_CONFIG_PATH"] = str(_STATE / "zenml")
os.environ["TUNELINE_CACHE"] = str(_STATE / "cache")
os.environ.pop("TUNELINE_MIRROR", None)
os.environ.pop("TUNELINE_CWD", None)  # set by scripts/in-venv to where pytest was started; tests set their own
sys.path.insert(0, str(ROOT))

import pytest  # noqa: E402

# Under pytest-xdist each worker has its own session store (this module runs once per worker), and a file runs
# whole on one worker, so that its module fixtures run once. Files that build on each other's state run together,
# in file order, as they would alone: the pipeline files (the first run is the store's first use, later ones find
# the smoke model trained and promoted), and the deployment files (one smoke model, deployed in turn).
UNITS = {
    "pipeline-lineage": {
        "test_data_inputs.py",
        "test_loose_ends.py",
        "test_own_data.py",
        "test_pipeline.py",
        "test_promotion.py",
        "test_remote.py",
        "test_serving.py",
        "test_tune.py",
    },
    "deployments": {
        "test_recorded.py",
        "test_recorded_review.py",
        "test_serve_deployment.py",
        "test_serve_page_browser.py",
    },
}
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")

if XDIST_WORKER:
    # An xdist worker has no main file for ZenML to take the source root from; run.py's folder is the one it takes.
    from zenml.utils.source_utils import set_custom_source_root

    set_custom_source_root(str(ROOT))


def _unit(nodeid: str) -> str:
    file = nodeid.split("::", 1)[0]
    return next((unit for unit, files in UNITS.items() if Path(file).name in files), file)


def pytest_xdist_make_scheduler(config, log):
    """xdist's file scheduling, with each of `UNITS` as one unit (its `loadgroup` needs markers in node ids, which
    pytest 9.2 no longer lets it write)."""
    from xdist.scheduler import LoadScopeScheduling

    class ByUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    return ByUnit(config, log)


def pytest_collection_modifyitems(items):
    """Under xdist, units are handed out in collection order: the long ones first (`UNITS`, then the files with slow
    tests), so that none starts last and ends alone."""
    if XDIST_WORKER:
        order = list(UNITS)

        def rank(item) -> int:
            unit = _unit(item.nodeid)
            return order.index(unit) if unit in order else len(order) + (item.get_closest_marker("slow") is None)

        items.sort(key=rank)


_MLFLOW_ENV = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}


@pytest.fixture(autouse=True)
def _mlflow_env_does_not_leak():
    """ZenML's MLflow tracker exports MLFLOW_TRACKING_URI when a test configures it in-process; a later test's
    `run.py` on a ZenML store of its own would inherit it and log into this session's MLflow store instead."""
    yield
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        if key not in _MLFLOW_ENV:
            del os.environ[key]
    os.environ.update(_MLFLOW_ENV)


@pytest.fixture(scope="session")
def tiny_model_dir():
    from tuneline.models.modeling import TINY_RANDOM, resolve_base_model

    return resolve_base_model(TINY_RANDOM)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from tuneline.models.modeling import load_tokenizer

    return load_tokenizer(tiny_model_dir)
