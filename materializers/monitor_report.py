"""The monitor's report: the verdict, the window's figures and drift, rendered as HTML in the dashboard."""

from typing import Any, Dict

from materializers.html_report import HtmlReportMaterializer
from tuneline.serve.monitoring import MonitorReport
from tuneline.evaluate.report import monitor_html


class MonitorReportMaterializer(HtmlReportMaterializer):
    ASSOCIATED_TYPES = (MonitorReport,)
    render = staticmethod(monitor_html)

    def extract_metadata(self, data: MonitorReport) -> Dict[str, Any]:
        return {"verdict": data.verdict, "reasons": data.reasons, "answers": data.current.answers}
