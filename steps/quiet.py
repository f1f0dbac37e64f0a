"""Lines that every step printed and that tell a tuneline user nothing: dropped at their source, nothing else.

Imported with the steps, so it also applies where a remote orchestrator runs them.
"""

from __future__ import annotations

import logging
import warnings

# logger name -> the start of the messages it should not print
_NOISE = {
    # ZenML disables every MLflow autologger it knows, and warns about frameworks that are not installed.
    "zenml.integrations.mlflow.experiment_trackers.mlflow_experiment_tracker": "Failed to disable MLflow autologging",
    "zenml.orchestrators.step_run_utils": "Models can be viewed in the dashboard using ZenML Pro",
    "zenml.pipelines.pipeline_definition": "You can visualize your pipeline runs in the",
    "absl": "Using default tokenizer.",  # rouge_score, once per scorer
}


class _Drop(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def install() -> None:
    import absl.logging  # noqa: F401  (absl makes its logger its own class: it must exist before we touch it)

    for name, prefix in _NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Drop) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(_Drop(prefix))
    # peft reads the deprecated `is_gradient_checkpointing` of every model it wraps.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
