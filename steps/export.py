import tempfile
from pathlib import Path
from typing import Annotated

from zenml import step

from steps.caching import CACHE_POLICY
from tuneline.artifacts import LoraAdapter, ModelFolder
from tuneline.config import ModelConfig
from tuneline.models.export import export_merged
from tuneline.models.modeling import resolve_base_model


@step(cache_policy=CACHE_POLICY)
def export_model(adapter: LoraAdapter, model: ModelConfig, source: str) -> Annotated[ModelFolder, "merged_model"]:
    out = Path(tempfile.mkdtemp(prefix="tuneline-export-")) / "model"
    export_merged(
        resolve_base_model(adapter.base_model), Path(adapter.path), out, dtype=model.dtype, device=model.device
    )
    return ModelFolder(path=str(out), base_model=adapter.base_model, source=source)
