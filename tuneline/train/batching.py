"""Turn tokenized examples into training batches without paying for padding.

Batches are built here, before the Trainer sees them: examples of like length together, each batch capped at
`batch_size` rows and, optionally, a token budget, so a batch of short rows holds more of them. The Trainer
shuffles whole batches and draws one per step (`BatchCollator`).

Labels are built from token positions, never from token ids: SmolLM2's pad token *is* its EOS, and masking
"every pad id" would mask the EOS too, leaving a model that never learns to stop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tuneline.data.chat_format import IGNORE


def _fill(rows: list[dict], pad_id: int, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Right-pad each key of `rows` to the longest row; pads get IGNORE labels and restarted positions."""
    width = max(len(r["input_ids"]) for r in rows)
    fill = {"input_ids": pad_id, "labels": IGNORE, "attention_mask": 0, "position_ids": None}
    out = {k: torch.full((len(rows), width), 0 if fill[k] is None else fill[k], dtype=torch.long) for k in keys}
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        for k in keys:
            out[k][i, :n] = torch.tensor(r[k])
            if k == "position_ids":
                out[k][i, n:] = torch.arange(width - n)  # a separate "sequence" nothing real attends to
    return out


@dataclass
class PadCollator:
    """Pad each batch to its own longest row (right side), masking pads by position."""

    pad_id: int

    def __call__(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        rows = [{**b, "attention_mask": [1] * len(b["input_ids"])} for b in batch]
        return _fill(rows, self.pad_id, ("input_ids", "labels", "attention_mask"))


def pack(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: indices grouped into bins whose lengths sum to at most `capacity`."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        slot = next((b for b, free in enumerate(room) if free >= lengths[i]), None)
        if slot is None:
            bins.append([])
            room.append(capacity)
            slot = len(bins) - 1
        bins[slot].append(i)
        room[slot] -= lengths[i]
    return bins


@dataclass
class PackCollator:
    """Pack a batch's examples into as few rows as fit: rows of at most `capacity` tokens (default: the batch's
    longest example, so attention never grows past what padding would cost), or, `padding_free`, one row.

    No attention mask is returned: positions restart at 0 for every example, and transformers turns a packed
    `position_ids` into a block-diagonal causal mask, so no token attends across an example boundary. Only the
    flash-attention paths read the boundaries from the positions without building that mask: with them a single
    row (not one pad token) is cheapest; with SDPA or eager the mask and the masked attention grow with the
    square of the row, hence rows no longer than the longest example. Each example's first label is IGNORE (it
    starts with the prompt), so no loss crosses a boundary either.
    """

    pad_id: int
    capacity: int | None = None
    padding_free: bool = False

    def __call__(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        lengths = [len(b["input_ids"]) for b in batch]
        capacity = sum(lengths) if self.padding_free else self.capacity or max(lengths)
        rows = []
        for group in pack(lengths, capacity):
            row = {"input_ids": [], "labels": [], "position_ids": []}
            for i in group:
                row["input_ids"] += batch[i]["input_ids"]
                row["labels"] += [IGNORE] + batch[i]["labels"][1:]
                row["position_ids"] += list(range(len(batch[i]["input_ids"])))
            rows.append(row)
        return _fill(rows, self.pad_id, ("input_ids", "labels", "position_ids"))


def length_grouped_batches(
    lengths: list[int], batch_size: int, max_tokens: int | None = None, packed: bool = False
) -> list[list[int]]:
    """Indices sorted by length and cut into batches of at most `batch_size` rows and `max_tokens` tokens: the
    rows' sum when packed, rows x longest row when padded. A row over the budget alone is a batch of one."""

    def cost(batch: list[int]) -> int:  # sorted ascending, so the last row is the longest
        return sum(lengths[i] for i in batch) if packed else len(batch) * lengths[batch[-1]]

    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        last = batches[-1] if batches else None
        if last and len(last) < batch_size and (max_tokens is None or cost(last + [i]) <= max_tokens):
            last.append(i)
        else:
            batches.append([i])
    return batches


@dataclass
class BatchCollator:
    """The Trainer draws one prebuilt batch per step (its batch size is 1); `collate` makes the tensors."""

    collate: PadCollator | PackCollator

    def __call__(self, drawn: list[list[dict]]) -> dict[str, torch.Tensor]:
        return self.collate([example for batch in drawn for example in batch])
