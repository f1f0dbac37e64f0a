"""Distributed training: `train_lora` in `training.num_processes` processes under `accelerate launch`, data
parallel (`training.strategy: ddp`) or sharded (`fsdp`, FSDP2: see `fsdp`).

This module is the step process's side: it writes the job, starts the ranks (`worker`), replays rank 0's events
(`channel`) and reads the result back.

What ZenML's accelerate runner does, done here so that it works for a step with dataset and config inputs: the
step process writes a job folder (records as JSONL, configs as JSON), runs

    python -m accelerate.commands.launch --multi_gpu --num_processes N ... -m tuneline.train.distributed.worker JOB

streams its output, and reads the result back. Every rank runs `train_lora`; the Trainer sees the
torchrun environment and trains with DDP (NCCL on GPUs, gloo on CPU), or with FSDP2 when `fsdp.LAUNCH_FLAGS`
replace `--multi_gpu`. Both pick accelerate's torchrun launcher on CPU too: its `--cpu` launcher starts one
process (more need mpirun). Rank 0 reports what the
single-process hooks would get as events in the job folder: logged metrics, replayed to `on_metrics` in the
step process as they come, and each checkpoint, handed to `on_checkpoint` there while rank 0 waits, so a
checkpoint is copied before the Trainer may rotate it away. Single node only; no ZenML imports.

Job folder (`<output_dir>/distributed`): `job.json`, `train.jsonl` and `validation.jsonl` (deleted after a
successful run), `events.jsonl`, `pushed/` (checkpoint acknowledgements), `errors/rank-<rank>.txt` (a failed
rank's traceback), `ranks/<rank>.json` (pid, world size and adapter digest per rank: equal digests show the
gradients were all-reduced, or under FSDP that the gathered adapter is whole), `result.json` (the `TrainResult`
of rank 0).
"""

from __future__ import annotations

import collections
import contextvars
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from tuneline.config import TrainingConfig
from tuneline.train.distributed import fsdp
from tuneline.train.distributed.channel import POLL_SECONDS, EventReader, acknowledge, write_json, write_jsonl
from tuneline.train.lora_model import TrainingSetupError, check_hardware
from tuneline.train.train_job import CheckpointHook, MetricsHook, TrainJob, TrainResult

log = logging.getLogger(__name__)

TAIL_LINES = 40


class DistributedTrainingError(RuntimeError):
    """The launched training processes failed; the message holds the tail of their output."""


def launch_command(job_dir: Path, cfg: TrainingConfig) -> list[str]:
    # --multi_gpu (DDP) and --use_fsdp both pick the torchrun launcher, also on CPU (see the module docstring)
    strategy = fsdp.LAUNCH_FLAGS if cfg.strategy == "fsdp" else ["--multi_gpu"]
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *strategy,
        "--num_processes",
        str(cfg.num_processes),
        "--num_machines",
        "1",
        "--main_process_port",
        "0",  # a free port, so runs side by side do not collide
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",  # bf16/fp16 are set by the Trainer's arguments
        "-m",
        "tuneline.train.distributed.worker",
        str(job_dir),
    ]


def _worker_env(cfg: TrainingConfig, cuda: bool) -> dict[str, str]:
    env = os.environ.copy()
    package_root = str(Path(__file__).resolve().parents[3])  # the folder holding tuneline/: importable anywhere
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    if not cuda:
        env["ACCELERATE_USE_CPU"] = "true"
        # N processes share the cores; torchrun would otherwise leave each with one thread.
        env["OMP_NUM_THREADS"] = str(cfg.threads or max(1, (os.cpu_count() or 1) // cfg.num_processes))
    return env


def _failure(job_dir: Path, num_processes: int, returncode: int, tail: list[str]) -> str:
    """The workers' own errors, first failure first (the others often just lost their peer), then the output's tail."""
    why = f"exited with code {returncode}" if returncode else "wrote no result"
    lines = [f"distributed training ({num_processes} processes, accelerate launch) {why}"]
    errors = sorted((job_dir / "errors").glob("rank-*.txt"), key=lambda p: p.stat().st_mtime)
    for path in errors:
        lines.append(f"{path.stem}: {path.read_text().strip().splitlines()[-1]}")
    if errors:
        lines += [f"traceback of {errors[0].stem}:", errors[0].read_text().rstrip()]
    lines.append(f"last {len(tail)} lines of its output:")
    return "\n".join(lines) + "\n" + "".join(tail)


def _pump(stream, tail: collections.deque) -> None:
    for line in stream:
        sys.stdout.write(line)
        sys.stdout.flush()
        tail.append(line)


def train_distributed(
    job: TrainJob, on_metrics: MetricsHook | None = None, on_checkpoint: CheckpointHook | None = None
) -> TrainResult:
    """`train_lora` in `training.num_processes` data-parallel processes; same job, same result."""
    cfg = job.training
    cuda = torch.cuda.is_available()
    check_hardware(job.model, cfg, cuda)  # fail here, before starting N processes that would each fail
    if cfg.strategy == "fsdp" and job.model.quantization == "8bit":
        raise TrainingSetupError(
            "training.strategy fsdp shards bitsandbytes weights only as 4-bit ones stored in a float dtype; use "
            "model.quantization 4bit (QLoRA) or none"
        )
    if cuda and torch.cuda.device_count() < cfg.num_processes:
        raise TrainingSetupError(
            f"training.num_processes: {cfg.num_processes} but {torch.cuda.device_count()} GPU(s) are visible; "
            "one process per GPU"
        )
    job_dir = job.output_dir / "distributed"
    if job_dir.exists():
        shutil.rmtree(job_dir)
    for sub in ("pushed", "ranks", "errors"):
        (job_dir / sub).mkdir(parents=True)
    write_jsonl(job_dir / "train.jsonl", job.train)
    write_jsonl(job_dir / "validation.jsonl", job.validation)
    write_json(
        job_dir / "job.json",
        {"job": job.settings(), "report_checkpoints": on_checkpoint is not None, "parent_pid": os.getpid()},
    )

    cmd = launch_command(job_dir, cfg)
    where = "GPU" if cuda else "CPU"
    log.info("training in %d processes (%s, %s): %s", cfg.num_processes, cfg.strategy, where, " ".join(cmd))
    proc = subprocess.Popen(
        cmd,
        env=_worker_env(cfg, cuda),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        errors="replace",
    )
    tail: collections.deque = collections.deque(maxlen=TAIL_LINES)
    # In a copy of this context: ZenML finds the step whose logs stdout belongs to through a context variable.
    pump = threading.Thread(target=contextvars.copy_context().run, args=(_pump, proc.stdout, tail), daemon=True)
    pump.start()
    events = EventReader(job_dir / "events.jsonl")
    try:
        while True:
            exited = proc.poll() is not None  # read events after this, so none written before exit is missed
            for event in events.new():
                if "metrics" in event and on_metrics:
                    on_metrics(event["step"], event["metrics"])
                elif "checkpoint" in event:
                    on_checkpoint(Path(event["checkpoint"]))  # in this process: the ZenML/MLflow context is here
                    acknowledge(job_dir, Path(event["checkpoint"]))
            if exited:
                break
            time.sleep(POLL_SECONDS)
        pump.join(timeout=30)
    finally:
        if proc.poll() is None:  # this process failed (e.g. a checkpoint push); do not leave workers behind
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    result_file = job_dir / "result.json"
    if proc.returncode != 0 or not result_file.is_file():
        raise DistributedTrainingError(_failure(job_dir, cfg.num_processes, proc.returncode, list(tail)))
    raw = json.loads(result_file.read_text())
    ranks = [json.loads(p.read_text()) for p in sorted((job_dir / "ranks").glob("*.json"))]
    if len({r["adapter_sha256"] for r in ranks}) > 1:
        log.warning("the ranks ended with different adapter weights: gradients were not synchronized (%s)", ranks)
    for name in ("train.jsonl", "validation.jsonl"):
        (job_dir / name).unlink()
    for other in job_dir.glob("rank-*"):  # the other ranks' copies of the adapter; their digests stay in ranks/
        shutil.rmtree(other)
    return TrainResult(**{**raw, "adapter_dir": Path(raw["adapter_dir"])})
