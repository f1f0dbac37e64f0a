"""Console output a user reads: one clear `error:` line, no Python traceback unless `--debug`.

ZenML logs a failing step with its traceback; the traceback still goes to the run's stored logs (ZenML's own log
handler sees the full record), only the console copy is cut to the message.
"""

from __future__ import annotations

import logging


def run_config_keys() -> list[str]:
    """The top-level keys ZenML's run-configuration schema accepts (it silently ignores any other)."""
    from zenml.config.pipeline_run_configuration import PipelineRunConfiguration

    return list(PipelineRunConfiguration.model_fields)


class _WithoutTraceback(logging.Formatter):
    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def hide_tracebacks() -> None:
    """Strip tracebacks from ZenML's console handler only."""
    from zenml.logger import ZenMLConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, ZenMLConsoleHandler) and not isinstance(handler.formatter, _WithoutTraceback):
            handler.setFormatter(_WithoutTraceback(handler.formatter))
