"""Quarantined rows as one JSONL file (file, line, reason, raw row), with an HTML preview."""

import os
from collections import Counter
from typing import Any, Dict, Type

from zenml.enums import ArtifactType, VisualizationType
from zenml.materializers.base_materializer import BaseMaterializer

from materializers.jsonl import read_jsonl, write_html, write_jsonl
from tuneline.artifacts import Quarantine
from tuneline.evaluate.report import quarantine_html


class QuarantineMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES = (Quarantine,)
    ASSOCIATED_ARTIFACT_TYPE = ArtifactType.DATA

    def _path(self) -> str:
        return os.path.join(self.uri, "quarantine.jsonl")

    def load(self, data_type: Type[Any]) -> Quarantine:
        return Quarantine(rows=read_jsonl(self.artifact_store, self._path()))

    def save(self, data: Quarantine) -> None:
        write_jsonl(self.artifact_store, self._path(), data.rows)

    def save_visualizations(self, data: Quarantine) -> Dict[str, VisualizationType]:
        path = os.path.join(self.uri, "preview.html")
        write_html(self.artifact_store, path, quarantine_html(data.rows))
        return {path: VisualizationType.HTML}

    def extract_metadata(self, data: Quarantine) -> Dict[str, Any]:
        return {
            "rows": len(data.rows),
            **{f"reason_{k}": v for k, v in Counter(r["reason"] for r in data.rows).items()},
        }
