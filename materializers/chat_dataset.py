"""A dataset artifact is one JSONL file per split, readable without ZenML, with an HTML preview."""

import hashlib
import json
import os
from typing import Any, Dict, Type

from zenml.enums import ArtifactType, VisualizationType
from zenml.materializers.base_materializer import BaseMaterializer

from materializers.integrity import require_intact
from materializers.jsonl import read_jsonl, write_html, write_jsonl
from tuneline.artifacts import ChatDataset
from tuneline.evaluate.report import dataset_html


class ChatDatasetMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES = (ChatDataset,)
    ASSOCIATED_ARTIFACT_TYPE = ArtifactType.DATA

    def _split_path(self, split: str) -> str:
        return os.path.join(self.uri, f"{split}.jsonl")

    def load(self, data_type: Type[Any]) -> ChatDataset:
        require_intact(self.uri)
        with self.artifact_store.open(os.path.join(self.uri, "splits.json"), "r") as f:
            names = json.load(f)
        return ChatDataset(splits={name: read_jsonl(self.artifact_store, self._split_path(name)) for name in names})

    def save(self, data: ChatDataset) -> None:
        with self.artifact_store.open(os.path.join(self.uri, "splits.json"), "w") as f:
            json.dump(list(data.splits), f)
        for name, rows in data.splits.items():
            write_jsonl(self.artifact_store, self._split_path(name), rows)

    def save_visualizations(self, data: ChatDataset) -> Dict[str, VisualizationType]:
        path = os.path.join(self.uri, "preview.html")
        write_html(self.artifact_store, path, dataset_html(data.splits))
        return {path: VisualizationType.HTML}

    def compute_content_hash(self, data: ChatDataset) -> str:
        """Lets the next step's cache key on the rows themselves, not on which run produced them."""
        digest = hashlib.sha256()
        for name, rows in data.splits.items():
            digest.update(name.encode())
            for row in rows:
                digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
        return digest.hexdigest()

    def extract_metadata(self, data: ChatDataset) -> Dict[str, Any]:
        return {f"rows_{k}": v for k, v in data.counts().items()}
