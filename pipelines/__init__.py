from pipelines.finetune import finetune

__all__ = ["finetune"]
