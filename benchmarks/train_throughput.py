"""Training throughput: our train step against what users would pick instead, same model, same examples.

    python benchmarks/train_throughput.py [--n 128] [--batch-size 8] [--setups ours,trl_tuned,...] [--json]
    python benchmarks/train_throughput.py --device cuda --shape llama-3.1-8b|smollm2-135m [--setups ...]
    python benchmarks/train_throughput.py ... --batch-tokens 2048|8192|16384

Every setup trains SmolLM2-135M-Instruct with the same LoRA (r, alpha, targets), learning rate, schedule, batch
size and seed for one pass over the same ViGGO training examples, so all see the same target tokens:

  ours        tuneline.train.training.train_lora: length-grouped batches (on CUDA: padding-free packed rows, Liger
              kernels, bf16 adapters), answer-only logits
  trl_default TRL SFTTrainer, SFTConfig defaults (bf16 and gradient checkpointing on), prompt-completion data
  trl_tuned   the same, set up for a CPU as a careful user would (bf16=False, gradient_checkpointing=False)
  pad512      a plain transformers Trainer padding every example to 512 tokens (ZenML's LLM fine-tuning project)

On `--device cuda` the model is built from `--shape` with random weights (benchmarks/model_shapes.py: no hub; the
tokenizer is the offline SmolLM2 one) in bfloat16, and the setups are our LoRA, our QLoRA 4-bit and 8-bit, TRL with
its defaults (bf16 weights, gradient checkpointing on), TRL tuned (checkpointing off, padding-free) and TRL QLoRA
4-bit; the share is of the bf16 matmul peak measured in the same run, and memory is peak GPU memory. TRL comes
from the `bench` extra, bitsandbytes and liger-kernel from the `gpu` extra.

`--batch-tokens N` sizes batches by tokens per step instead of rows: ours by its token budget
(`training.max_batch_tokens`), the others, whose batches are rows, with the row count whose mean length fills N
(pad512: N / 512 rows).

Each runs in its own process, in three phases: load (model, adapter, Trainer), training, evaluation. Columns:
non-pad tokens per second of training time, seconds per step, peak memory of each phase with the peak reset
between phases (`benchmarks/phase_memory.py`: GPU allocator on CUDA, resident set on CPU), the validation loss on
answer tokens of the model each setup trained, as it trained it (QLoRA's quantized base included), scored the same
way for every setup, and the share of this machine's matrix-multiply peak, measured in the same run, that training
reaches at ~4 flops per frozen parameter per token (forward, and backward to the inputs) plus 6 per adapter one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.model_shapes import SHAPES, bf16_matmul_peak_tflops, build_random_model  # noqa: E402
from benchmarks.phase_memory import PhaseMemory  # noqa: E402

SETUPS = ("ours", "trl_default", "trl_tuned", "pad512")
GPU_SETUPS = ("ours", "ours_qlora4", "ours_qlora8", "trl_default", "trl_tuned", "trl_qlora4")
LORA = {"r": 16, "alpha": 32, "dropout": 0.05}


def matmul_peak_gflops(threads: int, seconds: float = 3.0) -> float:
    """Best float32 GEMM rate of this machine: the ceiling any training step here could reach."""
    import torch

    torch.set_num_threads(threads)
    best = 0.0
    for n in (1024, 2048, 3072):
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b  # warm up
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            a @ b
            reps += 1
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start) / 1e9)
    return best


def _data(n: int, n_val: int, model_dir: Path, max_seq_len: int, source: str | None):
    from tuneline.config import DataConfig
    from tuneline.models.modeling import load_tokenizer
    from tuneline.data.sources import load_splits
    from tuneline.data.validation import prepare

    data = DataConfig(max_train_samples=n, max_validation_samples=n_val, max_test_samples=1, max_seq_len=max_seq_len)
    data = data.model_copy(update={"source": source}) if source else data
    splits = prepare(load_splits(data), data, load_tokenizer(model_dir)).splits
    return splits["train"][:n], splits["validation"][:n_val]


def _answer_eval_loss(model, tokenizer, records: list[dict]) -> float:
    """Mean cross-entropy per answer token, the same scorer for every setup."""
    import torch

    from tuneline.train.batching import PadCollator
    from tuneline.data.chat_format import IGNORE
    from tuneline.train.trainer import answer_loss

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(records), 8):
            batch = PadCollator(tokenizer.pad_token_id)(records[i : i + 8])
            batch = {k: v.to(model.device) for k, v in batch.items()}
            n = int((batch["labels"][:, 1:] != IGNORE).sum())
            total += float(answer_loss(model, batch)) * n
            count += n
    return total / count


def _rows_per_batch(args, row_tokens: float) -> int:
    """Rows per batch: --batch-size, or with --batch-tokens the rows of `row_tokens` each that fill it."""
    return max(1, round(args.batch_tokens / row_tokens)) if args.batch_tokens else args.batch_size


def _common_args(args, out_dir: Path, row_tokens: float) -> dict:
    """Hyperparameters every setup shares, as TrainingArguments keywords."""
    return dict(
        output_dir=str(out_dir),
        per_device_train_batch_size=_rows_per_batch(args, row_tokens),
        num_train_epochs=1,
        learning_rate=args.lr,
        warmup_steps=0,
        lr_scheduler_type="cosine",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=0,
        use_cpu=args.device == "cpu",
        disable_tqdm=True,
    )


def _peft_config():
    from peft import LoraConfig

    from tuneline.config import LoraConfig as Ours

    return LoraConfig(
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        target_modules=list(Ours().target_modules),
        task_type="CAUSAL_LM",
    )


QUANTIZATION = {"ours_qlora4": "4bit", "ours_qlora8": "8bit", "trl_qlora4": "4bit"}


def load_ours(args, model_dir, train, out_dir):
    """What `train_lora` sets up before it trains, as `train_lora` does it."""
    from transformers import set_seed

    from tuneline.config import LoraConfig, ModelConfig, TrainingConfig
    from tuneline.data.chat_format import ensure_chat_template
    from tuneline.models.modeling import load_tokenizer
    from tuneline.train.training import TrainJob, build_trainer

    cuda = args.device == "cuda"
    model_cfg = ModelConfig(
        base=str(model_dir), dtype="bfloat16" if cuda else "float32", quantization=QUANTIZATION.get(args.worker, "none")
    )
    cfg = TrainingConfig(
        epochs=1,
        learning_rate=args.lr,
        batch_size=args.batch_tokens or args.batch_size,  # with a token budget, the budget decides
        max_batch_tokens=args.batch_tokens,
        warmup_ratio=0.0,
        logging_steps=1,
        seed=0,
        packing=cuda,
        liger_kernel=cuda and args.liger,
    )
    job = TrainJob(model_dir, train, [], out_dir, model=model_cfg, lora=LoraConfig(**LORA), training=cfg)
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(model_dir)
    ensure_chat_template(tokenizer)
    tokens = sum(len(r["input_ids"]) for r in train)
    return build_trainer(job, tokenizer, None, None), tokens, tokenizer


def load_trl(args, model_dir, train, out_dir, setup: str):
    """TRL's SFTTrainer on prompt-completion rows (answer-only loss, as ours).

    On CUDA every TRL setup loads bf16 weights (TRL's own default would load float32); `trl_tuned` turns
    gradient checkpointing off and, on CUDA, turns on TRL's padding-free batches; `trl_qlora4` is TRL's QLoRA."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    cuda = args.device == "cuda"
    rows = [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in train]
    extra: dict = {}
    if cuda:
        extra["model_init_kwargs"] = {"dtype": "bfloat16"}
    if setup == "trl_tuned":
        extra |= {"gradient_checkpointing": False} | ({"padding_free": True} if cuda else {"bf16": False})
    if setup == "trl_qlora4":
        from transformers import BitsAndBytesConfig

        extra["model_init_kwargs"]["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype="bfloat16",
        )
    # TRL refuses max_length with padding-free rows unless it packs; the rows are already under max_seq_len.
    max_length = None if extra.get("padding_free") else args.max_seq_len
    row_tokens = sum(len(r["input_ids"]) for r in train) / len(train)
    config = SFTConfig(**_common_args(args, out_dir, row_tokens), max_length=max_length, **extra)
    trainer = SFTTrainer(
        model=str(model_dir), args=config, train_dataset=Dataset.from_list(rows), peft_config=_peft_config()
    )
    tokens = sum(len(x) for x in trainer.train_dataset["input_ids"])
    return trainer, tokens, trainer.processing_class


def load_pad512(args, model_dir, train, out_dir):
    """As ZenML's LLM LoRA project does: the whole chat as text, padded to a fixed 512, causal-LM collator."""
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from tuneline.models.modeling import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in train]
    enc = tokenizer(texts, padding="max_length", max_length=512, truncation=True)
    tokens = sum(sum(m) for m in enc["attention_mask"])
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), _peft_config())
    trainer = Trainer(
        model=model,
        args=TrainingArguments(**_common_args(args, out_dir, 512)),
        train_dataset=Dataset.from_dict(dict(enc)),
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
    )
    return trainer, tokens, tokenizer


def load(args, model_dir, train, out_dir):
    """The setup's Trainer, ready to train, the non-pad tokens of its pass, and its tokenizer."""
    if args.worker.startswith("ours"):
        return load_ours(args, model_dir, train, out_dir)
    if args.worker == "pad512":
        return load_pad512(args, model_dir, train, out_dir)
    return load_trl(args, model_dir, train, out_dir, args.worker)


def worker(args) -> None:
    import torch

    from tuneline.models.modeling import resolve_base_model

    torch.set_num_threads(args.threads)
    model_dir = Path(args.model_dir) if args.model_dir else resolve_base_model(args.model)
    train, val = _data(args.n, args.n_val, model_dir, args.max_seq_len, args.source)
    memory = PhaseMemory(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        with memory.phase("load"):
            trainer, tokens, tokenizer = load(args, model_dir, train, Path(tmp))
        with memory.phase("training"):
            start = time.monotonic()
            trainer.train()
            seconds = time.monotonic() - start
        model, steps = trainer.model, trainer.state.global_step  # scored as trained: its base, dtype, adapter
        trainable, total = model.get_nb_trainable_parameters()
        with memory.phase("evaluation"):
            eval_loss = _answer_eval_loss(model if args.device == "cuda" else model.float(), tokenizer, val)
    Path(args.out).write_text(
        json.dumps(
            {
                "setup": args.worker,
                "examples": len(train),
                "steps": steps,
                "seconds": seconds,
                "tokens": tokens,
                "tokens_per_second": tokens / seconds,
                "seconds_per_step": seconds / steps,
                "batch_tokens": args.batch_tokens,
                "peak_memory_gib": memory.peaks,
                "eval_loss": eval_loss,
                "flops_per_token": 4 * (total - trainable) + 6 * trainable,
            }
        )
    )


PHASES = {"load": "load", "training": "train", "evaluation": "eval"}  # PhaseMemory's phases: column heads


def table(results: dict, peak: float, device: str) -> str:
    cuda = device == "cuda"
    memory, scale = ("peak GPU GiB", 1) if cuda else ("peak RSS MB", 1024)
    unit = (
        "bf16 matmul peak (same run): {:.1f} TFLOP/s"
        if cuda
        else "matmul peak (float32 GEMM, same run): {:.1f} GFLOP/s"
    )
    head = f"{'setup':<13}{'steps':>6}{'non-pad tok/s':>15}{'s/step':>9}"
    head += "".join(f"{column:>8}" for column in PHASES.values()) + f"{'eval loss':>11}{'% of peak':>11}"
    lines = [f"{memory + ' per phase':>{len(head) - 22}}", head]
    for r in results.values():
        peaks = "".join(f"{r['peak_memory_gib'][phase] * scale:>8.{2 if cuda else 0}f}" for phase in PHASES)
        lines.append(
            f"{r['setup']:<13}{r['steps']:>6}{r['tokens_per_second']:>15.1f}{r['seconds_per_step']:>9.2f}"
            f"{peaks}{r['eval_loss']:>11.4f}{100 * r['share_of_peak']:>10.1f}%"
        )
    lines.append(unit.format(peak))
    for name in [n for n in results if n.startswith("ours")]:
        ours = results[name]["tokens_per_second"]
        ratios = [
            f"{ours / r['tokens_per_second']:.2f}x {other}"
            for other, r in results.items()
            if not other.startswith("ours")
        ]
        if ratios:
            lines.append(f"{name} vs: " + ", ".join(ratios))
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct", help="base model on --device cpu")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument(
        "--shape",
        choices=sorted(SHAPES),
        default="smollm2-135m",
        help="with --device cuda: the shape of the randomly initialized bf16 model",
    )
    p.add_argument("--no-liger", dest="liger", action="store_false", help="with --device cuda: ours without Liger")
    p.add_argument(
        "--source", help="data.source of the examples (default: ViGGO from the hub); synthetic:viggo offline"
    )
    p.add_argument("--n", type=int, default=128, help="training examples (one pass)")
    p.add_argument("--n-val", type=int, default=64, help="validation examples for the eval loss")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--batch-tokens",
        type=int,
        help="tokens per step instead of --batch-size rows (e.g. 2048, 8192, 16384); see the description",
    )
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--max-seq-len", type=int, default=256)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument(
        "--setups",
        help=f"comma-separated subset of {','.join(SETUPS)} (cpu) or {','.join(GPU_SETUPS)} (cuda); default: all",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--worker", choices=SETUPS + GPU_SETUPS, help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    known = GPU_SETUPS if args.device == "cuda" else SETUPS
    setups = [s for s in (args.setups or ",".join(known)).split(",") if s]
    unknown = set(setups) - set(known)
    if unknown:
        p.error(f"--setups: unknown {sorted(unknown)} on --device {args.device}; choose from {', '.join(known)}")
    results = {}
    passthrough = [a for a in sys.argv[1:] if a != "--json"]
    with tempfile.TemporaryDirectory() as tmp:
        if args.device == "cuda":
            peak = bf16_matmul_peak_tflops() * 1e3  # GFLOP/s, as on the CPU
            print(f"[{args.shape}] building random weights ...", file=sys.stderr, flush=True)
            passthrough += ["--model-dir", str(build_random_model(args.shape, Path(tmp) / args.shape))]
        else:
            peak = matmul_peak_gflops(args.threads)
        for setup in setups:
            out = Path(tmp) / f"{setup}.json"
            print(f"[{setup}] training ...", file=sys.stderr, flush=True)
            subprocess.run(
                [sys.executable, __file__, *passthrough, "--worker", setup, "--out", str(out)],
                check=True,
                env=os.environ.copy(),
            )
            r = json.loads(out.read_text())
            print(json.dumps(r), file=sys.stderr, flush=True)  # kept in the log should a later setup fail
            r["share_of_peak"] = r["tokens_per_second"] * r["flops_per_token"] / (peak * 1e9)
            results[setup] = r
    if args.json:
        print(
            json.dumps(
                {
                    "device": args.device,
                    "shape": args.shape if args.device == "cuda" else args.model,
                    "matmul_peak_gflops": peak,
                    "threads": args.threads,
                    "batch_tokens": args.batch_tokens,
                    "results": results,
                },
                indent=2,
            )
        )
    else:
        print(table(results, peak / 1e3 if args.device == "cuda" else peak, args.device))


if __name__ == "__main__":
    main()
