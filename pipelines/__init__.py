from pipelines.finetune import finetune, prepare_data

__all__ = ["finetune", "prepare_data"]
