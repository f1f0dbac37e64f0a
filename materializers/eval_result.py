"""An evaluation result: metrics and predictions as JSON, and an HTML report as its dashboard visualization."""

import os
from typing import Any, Dict, Type

from zenml.enums import ArtifactType, VisualizationType
from zenml.materializers.base_materializer import BaseMaterializer

from tuneline.evaluation import EvalResult
from tuneline.report import eval_html


class EvalResultMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES = (EvalResult,)
    ASSOCIATED_ARTIFACT_TYPE = ArtifactType.DATA_ANALYSIS

    def load(self, data_type: Type[Any]) -> EvalResult:
        with self.artifact_store.open(os.path.join(self.uri, "result.json"), "r") as f:
            return EvalResult.model_validate_json(f.read())

    def save(self, data: EvalResult) -> None:
        with self.artifact_store.open(os.path.join(self.uri, "result.json"), "w") as f:
            f.write(data.model_dump_json())

    def save_visualizations(self, data: EvalResult) -> Dict[str, VisualizationType]:
        path = os.path.join(self.uri, "report.html")
        with self.artifact_store.open(path, "w") as f:
            f.write(eval_html(data))
        return {path: VisualizationType.HTML}

    def extract_metadata(self, data: EvalResult) -> Dict[str, Any]:
        return {**data.metrics, "n_examples": data.n_examples, "test_set_hash": data.test_set_hash}
