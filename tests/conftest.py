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

# Files whose tests build on each other's runs in the session's ZenML store (the first run is the store's first
# use; later files find the smoke model trained and promoted): under pytest-xdist they run on one worker, in file
# order, as they would alone. Every other file runs whole on one worker, so that its module fixtures run once.
SESSION_STORE_FILES = {
    "test_data_inputs.py",
    "test_loose_ends.py",
    "test_own_data.py",
    "test_pipeline.py",
    "test_promotion.py",
    "test_recorded.py",
    "test_recorded_review.py",
    "test_remote.py",
    "test_serve_deployment.py",
    "test_serve_page_browser.py",
    "test_serving.py",
    "test_tune.py",
}
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")

if XDIST_WORKER:
    # An xdist worker has no main file for ZenML to take the source root from; run.py's folder is the one it takes.
    from zenml.utils.source_utils import set_custom_source_root

    set_custom_source_root(str(ROOT))


def _group(nodeid: str) -> str:
    file = nodeid.split("::", 1)[0]
    return "session-store" if Path(file).name in SESSION_STORE_FILES else file


def pytest_xdist_make_scheduler(config, log):
    """xdist's file scheduling, with the session-store files as one unit (its `loadgroup` needs markers in node
    ids, which pytest 9.2 no longer lets it write)."""
    from xdist.scheduler import LoadScopeScheduling

    class ByStore(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group(nodeid)

    return ByStore(config, log)


def pytest_collection_modifyitems(items):
    if XDIST_WORKER:  # units are handed out in collection order: the longest first, so that it does not end alone
        items.sort(key=lambda item: _group(item.nodeid) != "session-store")


@pytest.fixture(scope="session")
def tiny_model_dir():
    from tuneline.models.modeling import TINY_RANDOM, resolve_base_model

    return resolve_base_model(TINY_RANDOM)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from tuneline.models.modeling import load_tokenizer

    return load_tokenizer(tiny_model_dir)
