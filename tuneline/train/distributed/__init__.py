"""Data-parallel training under `accelerate launch`: `launcher` (the step process), `worker` (each rank) and
`channel` (the files between them)."""

from tuneline.train.distributed.launcher import DistributedTrainingError, train_distributed

__all__ = ["DistributedTrainingError", "train_distributed"]
