"""One training run, handed whole to the recipe (as TRL's SFTConfig or a torchtune config is), and what it returns.

The records come from the data step already tokenized (`input_ids`, `labels`), so training never tokenizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tuneline.config import LoraConfig, ModelConfig, TrainingConfig

MetricsHook = Callable[[int, dict[str, float]], None]
CheckpointHook = Callable[[Path], None]


@dataclass
class TrainJob:
    model_dir: Path
    train: list[dict]
    validation: list[dict]
    output_dir: Path  # the adapter goes to output_dir/adapter
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    checkpoint_dir: Path | None = None  # default: output_dir/checkpoints
    resume: bool = False  # continue from the newest checkpoint in checkpoint_dir
    task: str = "viggo"  # data.task: how validation answers are scored under training.select_by primary_metric

    def __post_init__(self) -> None:
        self.model_dir, self.output_dir = Path(self.model_dir), Path(self.output_dir)
        self.checkpoint_dir = Path(self.checkpoint_dir) if self.checkpoint_dir else self.output_dir / "checkpoints"

    @property
    def quantized(self) -> bool:
        return self.model.quantization != "none"

    @property
    def gradient_checkpointing(self) -> bool:
        """On for QLoRA unless turned off: a quantized base is chosen to save memory."""
        setting = self.training.gradient_checkpointing
        return self.quantized if setting is None else setting

    def settings(self) -> dict:
        """Everything but the records, as JSON-able values (the distributed job file)."""
        return {
            "model_dir": str(self.model_dir),
            "output_dir": str(self.output_dir),
            "checkpoint_dir": str(self.checkpoint_dir),
            "resume": self.resume,
            "task": self.task,
            "model": self.model.model_dump(),
            "lora": self.lora.model_dump(),
            "training": self.training.model_dump(),
        }

    @classmethod
    def from_settings(cls, settings: dict, train: list[dict], validation: list[dict]) -> "TrainJob":
        return cls(
            model_dir=settings["model_dir"],
            train=train,
            validation=validation,
            output_dir=settings["output_dir"],
            model=ModelConfig(**settings["model"]),
            lora=LoraConfig(**settings["lora"]),
            training=TrainingConfig(**settings["training"]),
            checkpoint_dir=settings["checkpoint_dir"],
            resume=settings["resume"],
            task=settings["task"],
        )


@dataclass
class TrainResult:
    adapter_dir: Path
    history: list[dict] = field(default_factory=list)
    eval_loss: float | None = None
    train_loss: float | None = None
    steps: int = 0
    seconds: float = 0.0  # in the Trainer's loop, evaluations during it included (a resumed run: its own part)
    rows: int = 0  # training rows all processes saw in those seconds (by the mean rows per batch)
    target_tokens: int = 0
    tokens: int = 0
    resumed_from: str | None = None
    choices: dict = field(default_factory=dict)  # what training decided and why: `budget`, `selected` checkpoint

    @property
    def resumed_from_step(self) -> int | None:
        return int(self.resumed_from.rsplit("-", 1)[1]) if self.resumed_from else None

    def _rate(self, count: float) -> float:
        return count / self.seconds if self.seconds else 0.0

    @property
    def rows_per_second(self) -> float:
        return self._rate(self.rows)

    @property
    def tokens_per_second(self) -> float:
        return self._rate(self.tokens)

    @property
    def steps_per_second(self) -> float:
        """Optimizer steps: each is gradient_accumulation_steps batches on each process."""
        return self._rate(self.steps - (self.resumed_from_step or 0))
