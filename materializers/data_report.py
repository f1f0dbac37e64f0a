"""The data report: counts, reasons, token-length histogram and field coverage, rendered as HTML."""

from typing import Any, Dict

from materializers.html_report import HtmlReportMaterializer
from tuneline.evaluate.report import data_report_html
from tuneline.data.validation import DataReport


class DataReportMaterializer(HtmlReportMaterializer):
    ASSOCIATED_TYPES = (DataReport,)
    render = staticmethod(data_report_html)

    def extract_metadata(self, data: DataReport) -> Dict[str, Any]:
        return {"reject_fraction": data.reject_fraction, "passed": data.passed, "quarantined": data.reason_totals()}
