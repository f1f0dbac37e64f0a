"""A dataset artifact is one JSONL file per split, readable without ZenML, with an HTML preview."""

import json
import os
from typing import Any, Dict, Type

from zenml.enums import ArtifactType, VisualizationType
from zenml.materializers.base_materializer import BaseMaterializer

from tuneline.artifacts import ChatDataset
from tuneline.report import dataset_html


class ChatDatasetMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES = (ChatDataset,)
    ASSOCIATED_ARTIFACT_TYPE = ArtifactType.DATA

    def _split_path(self, split: str) -> str:
        return os.path.join(self.uri, f"{split}.jsonl")

    def load(self, data_type: Type[Any]) -> ChatDataset:
        with self.artifact_store.open(os.path.join(self.uri, "splits.json"), "r") as f:
            names = json.load(f)
        splits = {}
        for name in names:
            with self.artifact_store.open(self._split_path(name), "r") as f:
                splits[name] = [json.loads(line) for line in f if line.strip()]
        return ChatDataset(splits=splits)

    def save(self, data: ChatDataset) -> None:
        with self.artifact_store.open(os.path.join(self.uri, "splits.json"), "w") as f:
            json.dump(list(data.splits), f)
        for name, rows in data.splits.items():
            with self.artifact_store.open(self._split_path(name), "w") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

    def save_visualizations(self, data: ChatDataset) -> Dict[str, VisualizationType]:
        path = os.path.join(self.uri, "preview.html")
        with self.artifact_store.open(path, "w") as f:
            f.write(dataset_html(data.splits))
        return {path: VisualizationType.HTML}

    def extract_metadata(self, data: ChatDataset) -> Dict[str, Any]:
        return {f"rows_{k}": v for k, v in data.counts().items()}
