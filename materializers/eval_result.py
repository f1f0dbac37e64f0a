"""An evaluation result: metrics and predictions as JSON, an HTML report as its dashboard visualization."""

from typing import Any, Dict

from materializers.html_report import HtmlReportMaterializer
from tuneline.evaluate.evaluation import EvalResult
from tuneline.evaluate.report import eval_html


class EvalResultMaterializer(HtmlReportMaterializer):
    ASSOCIATED_TYPES = (EvalResult,)
    render = staticmethod(eval_html)

    def extract_metadata(self, data: EvalResult) -> Dict[str, Any]:
        return {**data.metrics, "n_examples": data.n_examples, "test_set_hash": data.test_set_hash}
