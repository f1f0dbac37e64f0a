"""Folders of model files (a PEFT adapter, a merged model): stored file by file so any artifact store (local,
S3, GCS) holds them as they are; the dataclass's other fields go to a JSON file beside them."""

import dataclasses
import json
import os
from typing import Any, Dict, Type

from zenml.enums import ArtifactType
from zenml.materializers.base_materializer import BaseMaterializer
from zenml.utils import io_utils

from materializers.integrity import require_intact
from tuneline.artifacts import LoraAdapter, ModelFolder


class ModelFolderMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES = (LoraAdapter, ModelFolder)
    ASSOCIATED_ARTIFACT_TYPE = ArtifactType.MODEL

    def load(self, data_type: Type[Any]) -> Any:
        require_intact(self.uri)
        with self.artifact_store.open(os.path.join(self.uri, "tuneline.json"), "r") as f:
            fields = json.load(f)
        with self.get_temporary_directory(delete_at_exit=False) as tmp:
            io_utils.copy_dir(os.path.join(self.uri, "files"), tmp)
        return data_type(path=tmp, **fields)

    def save(self, data: Any) -> None:
        io_utils.copy_dir(data.path, os.path.join(self.uri, "files"))
        fields = {k: v for k, v in dataclasses.asdict(data).items() if k != "path"}
        with self.artifact_store.open(os.path.join(self.uri, "tuneline.json"), "w") as f:
            json.dump(fields, f)

    def extract_metadata(self, data: Any) -> Dict[str, Any]:
        fields = {k: v for k, v in dataclasses.asdict(data).items() if k != "path"}
        summary = fields.pop("train_summary", {})
        return {**fields, **{k: v for k, v in summary.items() if v is not None}}
