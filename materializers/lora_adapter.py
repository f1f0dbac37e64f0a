"""A PEFT adapter is a folder: store it file by file so any artifact store (local, S3, GCS) holds it as is."""

import json
import os
from typing import Any, Dict, Type

from zenml.enums import ArtifactType
from zenml.materializers.base_materializer import BaseMaterializer
from zenml.utils import io_utils

from tuneline.artifacts import LoraAdapter


class LoraAdapterMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES = (LoraAdapter,)
    ASSOCIATED_ARTIFACT_TYPE = ArtifactType.MODEL

    def load(self, data_type: Type[Any]) -> LoraAdapter:
        with self.artifact_store.open(os.path.join(self.uri, "tuneline.json"), "r") as f:
            meta = json.load(f)
        with self.get_temporary_directory(delete_at_exit=False) as tmp:
            io_utils.copy_dir(os.path.join(self.uri, "adapter"), tmp)
        return LoraAdapter(path=tmp, base_model=meta["base_model"], train_summary=meta["train_summary"])

    def save(self, data: LoraAdapter) -> None:
        io_utils.copy_dir(data.path, os.path.join(self.uri, "adapter"))
        with self.artifact_store.open(os.path.join(self.uri, "tuneline.json"), "w") as f:
            json.dump({"base_model": data.base_model, "train_summary": data.train_summary}, f)

    def extract_metadata(self, data: LoraAdapter) -> Dict[str, Any]:
        return {"base_model": data.base_model, **{k: v for k, v in data.train_summary.items() if v is not None}}
