"""Data-parallel training: `train_lora` in `training.num_processes` processes under `accelerate launch`.

What ZenML's accelerate runner does, done here so that it works for a step with dataset and config inputs: the
step process writes a job folder (records as JSONL, configs as JSON), runs

    python -m accelerate.commands.launch --multi_gpu --num_processes N ... -m tuneline.distributed JOB

streams its output, and reads the result back. Every rank runs `train_lora`; the Trainer sees the
torchrun environment and trains with DDP (NCCL on GPUs, gloo on CPU). `--multi_gpu` picks accelerate's torchrun
launcher on CPU too: its `--cpu` launcher starts one process (more need mpirun). Rank 0 reports what the
single-process hooks would get as events in the job folder: logged metrics, replayed to `on_metrics` in the
step process as they come, and each checkpoint, handed to `on_checkpoint` there while rank 0 waits, so a
checkpoint is copied before the Trainer may rotate it away. Single node only; no ZenML imports.

Job folder (`<output_dir>/distributed`): `job.json`, `train.jsonl` and `validation.jsonl` (deleted after a
successful run), `events.jsonl`, `pushed/` (checkpoint acknowledgements), `errors/rank-<rank>.txt` (a failed
rank's traceback), `ranks/<rank>.json` (pid, world size and adapter digest per rank: equal digests show the
gradients were all-reduced), `result.json` (the `TrainResult` of rank 0).
"""

from __future__ import annotations

import collections
import contextvars
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from tuneline.config import LoraConfig, ModelConfig, TrainingConfig
from tuneline.training import MetricsHook, TrainingSetupError, TrainResult, check_hardware, train_lora

log = logging.getLogger(__name__)

TAIL_LINES = 40
POLL_SECONDS = 0.2


class DistributedTrainingError(RuntimeError):
    """The launched training processes failed; the message holds the tail of their output."""


def launch_command(job: Path, num_processes: int) -> list[str]:
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu",  # the torchrun launcher, also on CPU (see the module docstring)
        "--num_processes", str(num_processes), "--num_machines", "1",
        "--main_process_port", "0",  # a free port, so runs side by side do not collide
        "--mixed_precision", "no", "--dynamo_backend", "no",  # bf16/fp16 are set by the Trainer's arguments
        "-m", "tuneline.distributed", str(job),
    ]


def _worker_env(cfg: TrainingConfig, cuda: bool) -> dict[str, str]:
    env = os.environ.copy()
    package_root = str(Path(__file__).resolve().parent.parent)  # tuneline importable wherever the step runs
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    if not cuda:
        env["ACCELERATE_USE_CPU"] = "true"
        # N processes share the cores; torchrun would otherwise leave each with one thread.
        env["OMP_NUM_THREADS"] = str(cfg.threads or max(1, (os.cpu_count() or 1) // cfg.num_processes))
    return env


def _write_jsonl(path: Path, records: list[dict]) -> None:
    with path.open("w") as fh:
        for record in records:
            fh.write(json.dumps(record) + "\n")


def _read_jsonl(path: Path) -> list[dict]:
    with path.open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _write_json(path: Path, value) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1, default=str))
    tmp.replace(path)  # readers never see half a file


class _EventReader:
    """New complete lines of `events.jsonl` since the last call."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def new(self) -> list[dict]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


def _failure(job: Path, num_processes: int, returncode: int, tail: list[str]) -> str:
    """The workers' own errors, first failure first (the others often just lost their peer), then the output's tail."""
    why = f"exited with code {returncode}" if returncode else "wrote no result"
    lines = [f"distributed training ({num_processes} processes, accelerate launch) {why}"]
    errors = sorted((job / "errors").glob("rank-*.txt"), key=lambda p: p.stat().st_mtime)
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
    model_dir: Path,
    train_records: list[dict],
    validation_records: list[dict],
    lora_cfg: LoraConfig,
    cfg: TrainingConfig,
    output_dir: Path,
    max_seq_len: int,
    model_cfg: ModelConfig = ModelConfig(),
    on_metrics: MetricsHook | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    on_checkpoint: Callable[[Path], None] | None = None,
) -> TrainResult:
    """`train_lora` in `cfg.num_processes` data-parallel processes; same arguments, same result."""
    cuda = torch.cuda.is_available()
    check_hardware(model_cfg, cuda)  # fail here, before starting N processes that would each fail
    if cuda and torch.cuda.device_count() < cfg.num_processes:
        raise TrainingSetupError(
            f"training.num_processes: {cfg.num_processes} but {torch.cuda.device_count()} GPU(s) are visible; "
            "one process per GPU"
        )
    output_dir = Path(output_dir)
    job = output_dir / "distributed"
    if job.exists():
        shutil.rmtree(job)
    for sub in ("pushed", "ranks", "errors"):
        (job / sub).mkdir(parents=True)
    _write_jsonl(job / "train.jsonl", train_records)
    _write_jsonl(job / "validation.jsonl", validation_records)
    _write_json(job / "job.json", {
        "model_dir": str(model_dir),
        "output_dir": str(output_dir),
        "checkpoint_dir": str(checkpoint_dir or output_dir / "checkpoints"),
        "resume": resume,
        "max_seq_len": max_seq_len,
        "model": model_cfg.model_dump(),
        "lora": lora_cfg.model_dump(),
        "training": cfg.model_dump(),
        "report_checkpoints": on_checkpoint is not None,
        "parent_pid": os.getpid(),
    })

    cmd = launch_command(job, cfg.num_processes)
    log.info("training in %d processes (%s): %s", cfg.num_processes, "GPU" if cuda else "CPU", " ".join(cmd))
    proc = subprocess.Popen(
        cmd, env=_worker_env(cfg, cuda), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        errors="replace",
    )
    tail: collections.deque = collections.deque(maxlen=TAIL_LINES)
    # In a copy of this context: ZenML finds the step whose logs stdout belongs to through a context variable.
    pump = threading.Thread(target=contextvars.copy_context().run, args=(_pump, proc.stdout, tail), daemon=True)
    pump.start()
    events = _EventReader(job / "events.jsonl")
    try:
        while True:
            exited = proc.poll() is not None  # read events after this, so none written before exit is missed
            for event in events.new():
                if "metrics" in event and on_metrics:
                    on_metrics(event["step"], event["metrics"])
                elif "checkpoint" in event:
                    on_checkpoint(Path(event["checkpoint"]))  # in this process: the ZenML/MLflow context is here
                    (job / "pushed" / Path(event["checkpoint"]).name).touch()
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

    result_file = job / "result.json"
    if proc.returncode != 0 or not result_file.is_file():
        raise DistributedTrainingError(_failure(job, cfg.num_processes, proc.returncode, list(tail)))
    raw = json.loads(result_file.read_text())
    ranks = [json.loads(p.read_text()) for p in sorted((job / "ranks").glob("*.json"))]
    if len({r["adapter_sha256"] for r in ranks}) > 1:
        log.warning("the ranks ended with different adapter weights: gradients were not synchronized (%s)", ranks)
    for name in ("train.jsonl", "validation.jsonl"):
        (job / name).unlink()
    for other in job.glob("rank-*"):  # the other ranks' copies of the adapter; their digests stay in ranks/
        shutil.rmtree(other)
    return TrainResult(**{**raw, "adapter_dir": Path(raw["adapter_dir"])})


# ---------------------------------------------------------------------------------------------------------------
# Worker: one process per rank, started by `accelerate launch`.


def _adapter_digest(adapter_dir: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(adapter_dir.glob("*.safetensors")):
        digest.update(f.read_bytes())
    return digest.hexdigest()


class _Events:
    """Rank 0's side of the event file: metrics as they are logged, checkpoints acknowledged by the step process."""

    def __init__(self, job: Path, parent_pid: int):
        self.path, self.job, self.parent_pid = job / "events.jsonl", job, parent_pid

    def _emit(self, event: dict) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(event) + "\n")

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self._emit({"step": step, "metrics": values})

    def checkpoint(self, path: Path) -> None:
        self._emit({"checkpoint": str(path)})
        ack = self.job / "pushed" / path.name
        while not ack.exists():  # the Trainer may delete this checkpoint later on; wait until it is copied
            try:
                os.kill(self.parent_pid, 0)
            except ProcessLookupError:
                raise RuntimeError(f"the launching process {self.parent_pid} is gone; stopping") from None
            time.sleep(POLL_SECONDS)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: accelerate launch ... -m tuneline.distributed JOB_DIR")
    job = Path(argv[0])
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"[rank {rank}] %(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        _work(job, rank, world)
    except BaseException:  # for the step's error message; the launcher's own summary has no traceback
        (job / "errors" / f"rank-{rank}.txt").write_text(traceback.format_exc())
        raise


def _work(job: Path, rank: int, world: int) -> None:
    spec = json.loads((job / "job.json").read_text())
    cfg = TrainingConfig(**spec["training"])
    if world != cfg.num_processes:
        raise SystemExit(f"started as {world} process(es), the job asks for training.num_processes {cfg.num_processes}")
    if torch.cuda.is_available():
        # Before the model loads: a quantized (QLoRA) base is placed on the current device, which must be this rank's.
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    events = _Events(job, spec["parent_pid"]) if rank == 0 else None
    output_dir = Path(spec["output_dir"]) if rank == 0 else job / f"rank-{rank}"  # one writer per adapter folder
    result = train_lora(
        Path(spec["model_dir"]),
        _read_jsonl(job / "train.jsonl"),
        _read_jsonl(job / "validation.jsonl"),
        LoraConfig(**spec["lora"]),
        cfg,
        output_dir,
        max_seq_len=spec["max_seq_len"],
        model_cfg=ModelConfig(**spec["model"]),
        on_metrics=events.metrics if events else None,
        checkpoint_dir=Path(spec["checkpoint_dir"]),
        resume=spec["resume"],
        on_checkpoint=events.checkpoint if events and spec["report_checkpoints"] else None,
    )
    _write_json(job / "ranks" / f"{rank}.json", {
        "rank": rank, "world_size": world, "pid": os.getpid(), "steps": result.steps,
        "adapter_sha256": _adapter_digest(result.adapter_dir),
    })
    if rank == 0:
        _write_json(job / "result.json", {**result.__dict__, "adapter_dir": str(result.adapter_dir)})


if __name__ == "__main__":
    main()
