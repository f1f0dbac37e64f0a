"""One rank of a distributed training run, started by `accelerate launch -m tuneline.train.distributed.worker JOB`.

Every rank runs the same `train_lora` on the same job; the Trainer sees the torchrun environment and trains with
DDP, or FSDP2 (`fsdp`). Rank 0 writes the adapter and reports through the channel; the others write to their own
folder, kept only for the digest that shows all ranks ended with the same weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import traceback
from pathlib import Path

import torch
from accelerate.state import AcceleratorState

from tuneline.train.distributed import fsdp
from tuneline.train.distributed.channel import EventWriter, read_jsonl, write_json
from tuneline.train.train_job import TrainJob
from tuneline.train.training import train_lora


def _adapter_digest(adapter_dir: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(adapter_dir.glob("*.safetensors")):
        digest.update(f.read_bytes())
    return digest.hexdigest()


def _work(job_dir: Path, rank: int, world: int) -> None:
    spec = json.loads((job_dir / "job.json").read_text())
    job = TrainJob.from_settings(
        spec["job"], read_jsonl(job_dir / "train.jsonl"), read_jsonl(job_dir / "validation.jsonl")
    )
    if world != job.training.num_processes:
        raise SystemExit(
            f"started as {world} process(es), the job asks for training.num_processes {job.training.num_processes}"
        )
    if torch.cuda.is_available():
        # Before the model loads: a quantized (QLoRA) base is placed on the current device, which must be this rank's.
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    elif job.training.strategy == "fsdp":
        fsdp.enable_on_cpu()
    events = EventWriter(job_dir, spec["parent_pid"]) if rank == 0 else None
    if rank:
        job.output_dir = job_dir / f"rank-{rank}"  # one writer per adapter folder
    result = train_lora(
        job,
        on_metrics=events.metrics if events else None,
        on_checkpoint=events.checkpoint if events and spec["report_checkpoints"] else None,
    )
    write_json(
        job_dir / "ranks" / f"{rank}.json",
        {
            "rank": rank,
            "world_size": world,
            "pid": os.getpid(),
            "steps": result.steps,
            "distributed_type": AcceleratorState().distributed_type.value,  # FSDP when the model was sharded
            "adapter_sha256": _adapter_digest(result.adapter_dir),
        },
    )
    if rank == 0:
        write_json(job_dir / "result.json", {**result.__dict__, "adapter_dir": str(result.adapter_dir)})


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: accelerate launch ... -m tuneline.train.distributed.worker JOB_DIR")
    job_dir = Path(argv[0])
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"[rank {rank}] %(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        _work(job_dir, rank, world)
    except BaseException:  # for the step's error message; the launcher's own summary has no traceback
        (job_dir / "errors" / f"rank-{rank}.txt").write_text(traceback.format_exc())
        raise


if __name__ == "__main__":
    main()
