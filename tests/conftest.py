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


@pytest.fixture(scope="session")
def tiny_model_dir():
    from tuneline.models.modeling import TINY_RANDOM, resolve_base_model

    return resolve_base_model(TINY_RANDOM)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from tuneline.models.modeling import load_tokenizer

    return load_tokenizer(tiny_model_dir)
