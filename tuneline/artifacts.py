"""Plain types that flow between steps; the ZenML materializers in `materializers/` store them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ChatDataset:
    """Records per split: `{"messages", "prompt", "completion", "source"}` (raw rows before prepare)."""

    splits: dict[str, list[dict]]

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.splits.items()}


@dataclass
class LoraAdapter:
    """A PEFT adapter folder (adapter_config.json, adapter_model.safetensors, tokenizer) and how it was made."""

    path: str
    base_model: str
    train_summary: dict = field(default_factory=dict)


@dataclass
class Quarantine:
    """Rejected rows: `{"split", "file", "line", "reason", "detail", "raw"}` each, the raw row kept whole."""

    rows: list[dict]


@dataclass
class ModelFolder:
    """A merged, plain Hugging Face model folder (config, safetensors, tokenizer) and where it came from."""

    path: str
    base_model: str
    source: str  # e.g. "tuneline-viggo version 3"
