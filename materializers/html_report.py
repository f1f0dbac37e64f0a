"""Base for reports: a pydantic model stored as JSON, shown in the dashboard as the HTML its `render` makes."""

import os
from typing import Any, Callable, ClassVar, Dict, Type

from pydantic import BaseModel
from zenml.enums import ArtifactType, VisualizationType
from zenml.materializers.base_materializer import BaseMaterializer

from materializers.integrity import require_intact
from materializers.jsonl import write_html


class HtmlReportMaterializer(BaseMaterializer):
    SKIP_REGISTRATION = True  # abstract: subclasses name the model type and its renderer
    ASSOCIATED_ARTIFACT_TYPE = ArtifactType.DATA_ANALYSIS
    render: ClassVar[Callable[[Any], str]]

    def _json(self) -> str:
        return os.path.join(self.uri, "report.json")

    def load(self, data_type: Type[BaseModel]) -> BaseModel:
        require_intact(self.uri)
        with self.artifact_store.open(self._json(), "r") as f:
            return data_type.model_validate_json(f.read())

    def save(self, data: BaseModel) -> None:
        with self.artifact_store.open(self._json(), "w") as f:
            f.write(data.model_dump_json())

    def save_visualizations(self, data: BaseModel) -> Dict[str, VisualizationType]:
        path = os.path.join(self.uri, "report.html")
        write_html(self.artifact_store, path, type(self).render(data))
        return {path: VisualizationType.HTML}
