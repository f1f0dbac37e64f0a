"""The one typed tuneline config: the `parameters:` block of a ZenML run-config file.

Every section is a pydantic model that forbids unknown keys, so a typo fails at load time with the dotted
path of the bad key instead of being silently ignored halfway through a training run.
"""

from __future__ import annotations

import copy
import difflib
import posixpath
from pathlib import Path
from typing import Any, Collection, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tuneline.tasks import JsonMatch, can_be_tested, metric_names

TaskName = Literal["viggo", "json", "text"]
DataFormat = Literal["auto", "chat", "instruction", "prompt_completion", "fields"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    """Where the rows come from, how they become chat messages, and which rows are fit to train on."""

    source: str = Field(
        "gem/viggo",
        description="Hub dataset id, a .jsonl/.json/.csv/.parquet file, a folder of split files, or 'synthetic:viggo'.",
    )
    task: TaskName = Field(
        "viggo",
        description="How answers become fields for metrics: 'viggo' (act and slots), 'json' (a JSON "
        "answer's flattened paths), 'text' (ROUGE and exact string match only).",
    )
    format: DataFormat = Field("auto", description="Row format; 'auto' detects it per row from the keys present.")
    input_field: str = Field("target", description="For format 'fields': the user message.")
    output_field: str = Field("meaning_representation", description="For format 'fields': the answer.")
    system_prompt: str | None = Field(
        None,
        description="First message of every non-chat row; null (the default): none, whatever the task. '' is an "
        "empty system turn: the fewest tokens, and it keeps out the default prompt some chat templates add when "
        "there is none (SmolLM2's is 16 tokens).",
    )
    max_train_samples: int | None = Field(None, ge=1, description="Seeded sample of the accepted train rows.")
    max_validation_samples: int | None = Field(None, ge=1, description="Seeded sample of the accepted validation rows.")
    max_test_samples: int | None = Field(None, ge=1, description="Seeded sample of the accepted test rows.")
    seed: int = Field(42, description="Seed of the made splits and the samples: the same rows are held out every run.")
    max_seq_len: int = Field(256, ge=16, description="Token limit for one rendered conversation.")
    overlong: Literal["quarantine", "truncate"] = Field(
        "quarantine", description="Rows over max_seq_len: quarantine them, or cut the start of the prompt."
    )
    max_reject_fraction: float = Field(
        0.05, ge=0.0, le=1.0, description="Fail the run when more than this share of input rows is quarantined."
    )
    conflicts: Literal["report", "quarantine"] = Field(
        "report",
        description="One input with different answers: count it in the data report, or also quarantine "
        "all its rows (reason `conflict`). A data-to-text corpus with several references per input has such "
        "inputs by design.",
    )


class ModelConfig(_Section):
    """The base model: hub id, local folder, .gguf file, or 'tiny-random' (built locally)."""

    base: str = Field("HuggingFaceTB/SmolLM2-135M-Instruct", description="The model the adapter is trained on.")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32",
        description="Weights' dtype; training in bfloat16 or float16 needs CUDA. Generation on a CPU runs in float32.",
    )
    quantization: Literal["none", "4bit", "8bit"] = Field(
        "none", description="QLoRA: load the frozen base in 4- or 8-bit through bitsandbytes (CUDA only)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="Where evaluation, promotion re-scoring, review export and serving run the model; "
        "'auto' is the CUDA GPU when the machine has one, else the CPU.",
    )
    attn_implementation: Literal[
        "auto", "eager", "sdpa", "flash_attention_2", "flash_attention_3", "flash_attention_4"
    ] = Field(
        "auto",
        description="Attention kernel for training. 'auto': transformers' default (SDPA). The flash "
        "paths read padding-free packed rows without building a mask (CUDA and a flash-attn package only; "
        "flash_attention_4 is the `flash` extra).",
    )


class LoraConfig(_Section):
    r: int = Field(16, ge=1, description="LoRA rank: the adapter matrices' inner dimension.")
    alpha: int = Field(32, ge=1, description="LoRA scaling: the adapter's update is multiplied by alpha / r.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the adapter's input.")
    target_modules: list[str] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Module names LoRA wraps; the default is every attention and MLP projection.",
    )
    last_layers: int | None = Field(
        None,
        ge=1,
        description="Adapt only the last N decoder layers (None: all). The backward pass stops at the "
        "first adapted layer, so each step costs less; on a CPU budget that buys more examples.",
    )


class TrainingConfig(_Section):
    epochs: float = Field(1.0, gt=0, description="Passes over the training rows; fractions allowed.")
    max_steps: int | None = Field(None, ge=1, description="Overrides epochs when set.")
    learning_rate: float = Field(1e-3, gt=0, description="Peak learning rate, reached after a linear warmup.")
    batch_size: int = Field(
        8,
        ge=1,
        description="Rows per batch. Rows per optimizer step: batch_size times "
        "gradient_accumulation_steps times num_processes.",
    )
    gradient_accumulation_steps: int = Field(1, ge=1, description="Batches per optimizer step.")
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0, description="Share of the steps spent on the warmup.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule after the warmup."
    )
    logging_steps: int = Field(10, ge=1, description="Training loss logged (and sent to MLflow) every N steps.")
    seed: int = Field(42, description="Seed of the adapter's initialization, dropout and batch order.")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; default: all cores.")
    packing: bool = Field(
        False,
        description="Pack each batch's examples into rows (positions restart per example; attention never "
        "crosses examples): one padding-free row under flash attention, rows no longer than the batch's longest "
        "example otherwise. False: pad each batch to its longest row. Batches are grouped by length either way, "
        "which leaves little padding on short single-turn rows; packing pays off when lengths differ widely.",
    )
    gradient_checkpointing: bool | None = Field(
        None,
        description="Trade compute for memory: recompute activations. Default: on for QLoRA (a quantized "
        "base is chosen to save memory), off otherwise.",
    )
    eval_steps: int | None = Field(None, ge=1, description="Validation loss every N steps (None: at the end only).")
    early_stopping_patience: int | None = Field(
        None,
        ge=1,
        description="Stop after this many evaluations without a better validation score: lower loss, "
        "or with select_by primary_metric a higher metric (needs eval_steps).",
    )
    select_by: Literal["eval_loss", "primary_metric"] = Field(
        "eval_loss",
        description="What early stopping watches. 'primary_metric': each evaluation also generates "
        "greedy answers for the validation rows (data.max_validation_samples keeps it short) and scores the task's "
        "primary metric (exact_match for viggo and json, rougeL for text); the adapter returned is the checkpoint "
        "that scored best (needs eval_steps; checkpoints are written at each evaluation).",
    )
    budget_minutes: float | None = Field(
        None,
        gt=0,
        description="Train for this long: the first steps measure tokens per second on this machine, "
        "and the rows and epochs that fill the budget follow (all rows first, then more epochs, at most 10), "
        "evaluations included; the choice and why are logged and in the run's summary. Replaces epochs.",
    )
    save_steps: int | None = Field(
        None,
        ge=1,
        description="Checkpoint (adapter, optimizer, scheduler, RNG, data position) every N steps; "
        "`run.py --resume` continues from the last one.",
    )
    num_processes: int = Field(1, ge=1, description="Data-parallel processes (GPUs); > 1 runs train under accelerate.")
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="How num_processes > 1 share the work. 'ddp': each process holds the whole model and the "
        "gradients are all-reduced; fastest while the model, its gradients and activations fit one GPU. 'fsdp': "
        "FSDP2 through accelerate shards the weights across the processes (all-gathered layer by layer), for a "
        "base that does not fit one GPU; with QLoRA the 4-bit weights are stored in model.dtype so they can be "
        "sharded (docs/gpu.md).",
    )
    max_batch_tokens: int | None = Field(
        None,
        ge=16,
        description="Size each batch by a token budget (its rows times its longest row, or its packed "
        "length) instead of batch_size rows; batch_size stays the cap on rows.",
    )
    adapter_dtype: Literal["compute", "float32"] = Field(
        "compute",
        description="LoRA weights in model.dtype ('compute': bf16/fp16 matmuls use tensor cores) or kept "
        "in float32 (peft's default). The same on a float32 model.",
    )
    liger_kernel: bool = Field(
        False, description="Fused RMSNorm, SwiGLU and RoPE kernels from liger-kernel (the `gpu` extra; CUDA only)."
    )
    torch_compile: bool = Field(False, description="Compile the model with torch.compile before training.")
    loraplus_lr_ratio: float | None = Field(
        None,
        ge=1,
        description="LoRA+ (peft's optimizer): the B matrices learn this many times faster than the A matrices, "
        "which keep learning_rate. None: one rate for both.",
    )

    @model_validator(mode="after")
    def _early_stopping_needs_eval(self) -> "TrainingConfig":
        if self.early_stopping_patience and not self.eval_steps:
            raise ValueError("early_stopping_patience needs eval_steps: stopping is decided on validation scores")
        if self.select_by == "primary_metric" and not self.eval_steps:
            raise ValueError("select_by primary_metric needs eval_steps: checkpoints are scored at evaluations")
        if self.select_by == "primary_metric" and self.save_steps and self.save_steps % self.eval_steps:
            raise ValueError(
                "select_by primary_metric needs save_steps to be a multiple of eval_steps: the best "
                "adapter is restored from a checkpoint written at an evaluation"
            )
        if self.budget_minutes and self.max_steps:
            raise ValueError("budget_minutes and max_steps both set how long training runs; set one")
        if self.strategy == "fsdp" and self.num_processes < 2:
            raise ValueError("strategy fsdp shards the model across processes: it needs num_processes > 1")
        return self


class PromptedBaseline(_Section):
    """The base model prompted instead of tuned: an instruction and a few training examples before each test
    input. What fine-tuning must beat to be worth it; with no production version, promotion compares against the
    stronger of the base model and this."""

    enabled: bool = Field(
        True, description="Score it beside base and tuned; false: promotion compares with the base model alone."
    )
    shots: int = Field(3, ge=0, le=32, description="Training examples shown before each test input.")
    instruction: str | None = Field(
        None, description="The system turn; None: one derived from the task (tuneline/evaluate/baseline.py)."
    )
    seed: int = Field(0, description="Which training examples are shown (the same ones for every test input).")


class EvaluationConfig(_Section):
    max_samples: int | None = Field(200, ge=1, description="Test examples scored; None means all.")
    batch_size: int = Field(16, ge=1, description="The most prompts generated together.")
    max_new_tokens: int = Field(96, ge=1, description="Answer length cap in tokens; generation stops at EOS before it.")
    constrained: bool = Field(
        False,
        description="Decode under the task's grammar (xgrammar): viggo answers use only the acts and slot "
        "names of the training answers, json answers are JSON; every answer parses. Scored and compared apart "
        "from unconstrained results.",
    )
    max_batch_tokens: int | None = Field(
        None,
        ge=16,
        description="Also cap a generation batch at this many tokens (rows times longest prompt plus "
        "max_new_tokens), so a GPU run can raise batch_size to fill the card without running out of memory.",
    )
    json_match: JsonMatch = Field(default_factory=JsonMatch, description="Task json: when two leaf values are equal.")
    prompted_baseline: PromptedBaseline = Field(
        default_factory=PromptedBaseline, description="The base model prompted with a few examples."
    )


class PromotionConfig(_Section):
    """Promote when the paired-bootstrap 95% interval of (candidate - reference) on the primary metric lies above
    `min_gain`, and no guarded metric drops by more than `tolerance`. The reference is the current version in
    `target_stage`, or, when there is none, the stronger of the base model and the prompted base model."""

    primary_metric: str = Field(
        "exact_match",
        description="The metric whose interval decides; any testable metric of data.task (checked at load time).",
    )
    min_gain: float = Field(0.0, ge=0.0, description="The interval's lower bound must exceed this.")
    guarded_metrics: list[str] = Field(["f1.*"], description="'f1.*' means every field's F1.")
    tolerance: float = Field(0.02, ge=0.0, description="Largest drop allowed in a guarded metric.")
    min_support: int = Field(
        10,
        ge=1,
        description="'f1.*' guards only fields the scored references hold at least "
        "this often; with fewer, one flipped example moves a field's F1 by more than tolerance.",
    )
    bootstrap_samples: int = Field(2000, ge=100, description="Paired bootstrap resamples of the test examples.")
    seed: int = Field(0, description="Seed of the bootstrap resamples.")
    target_stage: Literal["production", "staging"] = Field(
        "production", description="The stage a winning version moves to, and whose version it must beat."
    )


class ServingConfig(_Section):
    """`run.py serve`: the `extract` deployment of a model version. Generation follows `evaluation` (batch size,
    max_new_tokens, constrained); these keys bound a request and say where the server listens."""

    max_texts: int = Field(32, ge=1, description="The most texts one request may carry.")
    max_input_tokens: int | None = Field(
        None,
        ge=1,
        description="The longest text, in tokens; None: the model's context less max_new_tokens and "
        "the prompt's template.",
    )
    max_request_bytes: int = Field(
        1_048_576,
        ge=1024,
        description="The largest request body; a larger one gets HTTP 413 before it is read, "
        "so a huge request cannot stall the server.",
    )
    address: str = Field("127.0.0.1", description="Listen address; anything but loopback requires a key.")
    port: int | None = Field(None, ge=1, le=65535, description="None: the deployer picks a free one.")
    follow_seconds: float = Field(
        10.0,
        gt=0,
        description="Serving a stage (production): how often to look for a newly promoted version. It "
        "is loaded beside the old one and swapped in between requests, so none fail.",
    )
    min_confidence: Literal["auto"] | float = Field(
        "auto",
        description="Answers less confident than this are marked needs_review. 'auto': the lowest threshold "
        "at which the tuned model's accepted test answers reach target_precision exact match (recorded with the "
        "model version).",
    )
    target_precision: float = Field(
        0.95, gt=0.0, le=1.0, description="Exact match that min_confidence 'auto' asks of the answers it accepts."
    )
    record: Literal["full", "redacted", "off"] = Field(
        "full",
        description="Each answered request becomes an MLflow trace in the experiment `<model>-requests` "
        "(docs/monitoring.md): 'full' keeps texts and answers, 'redacted' only their lengths and hashes (and the "
        "answers' act and field names), 'off' records nothing (and /feedback has nothing to correct).",
    )
    batch_wait_ms: float = Field(
        10.0,
        ge=0,
        description="Concurrent requests are generated together: the first queued one waits this long "
        "for others to join its batch (requests queued during a generation join the next one without waiting).",
    )
    max_batch_tokens: int | None = Field(
        4096,
        ge=1,
        description="The most tokens one batch of requests takes: each text's tokens plus "
        "evaluation.max_new_tokens, summed. A request over it alone is a batch of its own, so 1 turns batching "
        "off; None: no cap. Generation still splits a batch by evaluation.batch_size and max_batch_tokens.",
    )

    @model_validator(mode="after")
    def _confidence_is_a_probability(self) -> "ServingConfig":
        if self.min_confidence != "auto" and not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be 'auto' or within [0, 1], got {self.min_confidence}")
        return self


class MonitoringConfig(_Section):
    """`run.py monitor`: what the served model's recorded requests are compared with, and the limits that turn a
    comparison into a verdict (`ok`, `drift`, `decline`). Drift is the population stability index (PSI) of a
    distribution against the training data and against the previous window: > 0.1 is a moderate shift, > 0.25 a
    large one by the usual rule of thumb."""

    window: str = Field(
        "7d",
        pattern=r"^\d+[mhd]$",
        description="How far back a run looks (`30m`, `12h`, `7d`); the "
        "window before it of the same length is the previous window. `--since` overrides it.",
    )
    min_requests: int = Field(
        30,
        ge=1,
        description="Fewer recorded answers in a window than this: its distributions "
        "are not judged (a PSI on a handful of answers is noise).",
    )
    max_psi: float = Field(
        0.2,
        gt=0.0,
        description="Drift when the PSI of the act, of a field's presence or of the "
        "input length (characters, in deciles of the training inputs) is above this.",
    )
    min_parse_rate: float = Field(0.95, ge=0.0, le=1.0, description="Decline when fewer answers than this parse.")
    max_review_increase: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="Decline when the share of answers needing "
        "review rises by more than this over the previous window.",
    )
    min_accuracy: float = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description="Decline when the exact match of the answers on "
        "corrected requests is below this (judged from min_corrections corrections on).",
    )
    min_corrections: int = Field(
        20,
        ge=1,
        description="Corrections needed to judge accuracy, and new corrections "
        "(made since the production version was trained) needed before retraining.",
    )
    retrain: bool = Field(
        False,
        description="When the verdict is not ok and min_corrections new corrections exist, "
        "launch the finetune pipeline on the same stack; its data then includes the corrections.",
    )


class TuningSpace(_Section):
    """The recipes `run.py tune` draws its trials from: each trial takes one value of every list; an empty list
    keeps the config's own value. No epochs: trials and the winner train for minutes, not passes."""

    learning_rate: list[float] = Field([5e-4, 1e-3, 2e-3, 5e-3], description="training.learning_rate values.")
    batch_size: list[int] = Field(
        [4, 8, 16], description="training.batch_size values: rows per step, so also steps per minute."
    )
    r: list[int] = Field(
        [8, 16, 32], description="lora.r values; lora.alpha follows r, keeping the config's alpha / r."
    )
    target_modules: list[list[str]] = Field(
        [
            ["q_proj", "v_proj"],
            ["q_proj", "k_proj", "v_proj", "o_proj"],
            LoraConfig.model_fields["target_modules"].default,
        ],
        description="lora.target_modules values: which projections are adapted.",
    )
    last_layers: list[int | None] = Field(
        [], description="lora.last_layers values (null: every layer); empty: the config's."
    )
    loraplus_lr_ratio: list[float | None] = Field(
        [], description="training.loraplus_lr_ratio values (null: plain LoRA); empty: the config's."
    )

    @model_validator(mode="after")
    def _values_are_valid(self) -> "TuningSpace":
        bad = [f"learning_rate {v}" for v in self.learning_rate if v <= 0]
        bad += [f"batch_size {v}" for v in self.batch_size if v < 1]
        bad += [f"r {v}" for v in self.r if v < 1]
        bad += [f"last_layers {v}" for v in self.last_layers if v is not None and v < 1]
        bad += [f"loraplus_lr_ratio {v}" for v in self.loraplus_lr_ratio if v is not None and v < 1]
        bad += ["target_modules []" for v in self.target_modules if not v]
        if bad:
            raise ValueError(
                f"tuning.space: {', '.join(bad)} cannot train (rates > 0; batch sizes, r, layers, LoRA+ ratios >= 1)"
            )
        return self


class TuningConfig(_Section):
    """`run.py tune`: the config's own recipe and a seeded draw from the space, by successive halving. Every trial
    of a rung trains for the same minutes and is scored on the validation rows; the best 1/eta go on to the next
    rung with eta times the minutes. The winner is written as a config and trained for what is left of the budget
    (docs/tuning.md)."""

    budget_minutes: float | None = Field(
        None,
        gt=0,
        description="The search and the winner's training together; `run.py tune --budget-minutes` overrides it, "
        "and one of them is needed.",
    )
    search_share: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="The most of the budget the search may spend; the winner's training gets the rest.",
    )
    trials: int = Field(
        4, ge=2, description="Recipes in the first rung: the config's own and trials - 1 drawn from the space."
    )
    eta: int = Field(
        2, ge=2, description="Each rung keeps the best 1/eta of its trials and gives them eta times the rows."
    )
    min_minutes: float = Field(
        1.0,
        gt=0,
        description="Training minutes of each trial of the first rung (loading and scoring come on top); rung k "
        "trains eta**k times as long.",
    )
    seed: int = Field(0, description="Seed of the recipes drawn from the space.")
    metric: str | None = Field(
        None,
        description="The validation metric that ranks trials; null: the task's primary metric (exact_match for "
        "viggo and json, rougeL for text).",
    )
    space: TuningSpace = Field(default_factory=TuningSpace, description="The values the trials draw from.")


class TunelineConfig(_Section):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    lora: LoraConfig = Field(LoraConfig(), description="The LoRA adapter trained on the frozen base model.")
    training: TrainingConfig = Field(
        TrainingConfig(), description="The train_lora step: length, optimizer, batches, kernels, checkpoints."
    )
    evaluation: EvaluationConfig = Field(
        EvaluationConfig(),
        description="How the evaluate steps and promotion's re-scoring generate and score "
        "answers on the test split; serving generates the same way.",
    )
    promotion: PromotionConfig = PromotionConfig()
    serving: ServingConfig = ServingConfig()
    monitoring: MonitoringConfig = Field(
        MonitoringConfig(),
        description="`run.py monitor`: drift and decline of the served model's recorded "
        "requests, and when they retrain it.",
    )
    tuning: TuningConfig = Field(TuningConfig(), description="`run.py tune`: the recipe search and its budget.")

    @model_validator(mode="after")
    def _promotion_metrics_exist(self) -> "TunelineConfig":
        task = self.data.task
        for key, names in (
            ("primary_metric", [self.promotion.primary_metric]),
            ("guarded_metrics", self.promotion.guarded_metrics),
        ):
            for name in names:
                if name != "f1.*" and not can_be_tested(name, task):
                    choices = sorted(metric_names(task) - {"macro_f1"}) + (
                        [] if task == "text" else ["f1.<field>", "f1.*"]
                    )
                    raise ValueError(
                        f"promotion.{key}: '{name}' is not a testable metric of task '{task}'; choose from {choices}"
                    )
        return self

    @model_validator(mode="after")
    def _tuning_metric_exists(self) -> "TunelineConfig":
        if self.tuning.metric is not None and self.tuning.metric not in metric_names(self.data.task):
            choices = sorted(metric_names(self.data.task))
            raise ValueError(
                f"tuning.metric: '{self.tuning.metric}' is not a metric of task '{self.data.task}'; "
                f"choose from {choices}"
            )
        return self


class ConfigError(ValueError):
    """A config file that cannot run; the message names the file and the bad key."""


def _format_validation_error(path: str, err: ValidationError) -> str:
    lines = [f"{path}: invalid config"]
    for e in err.errors():
        key = ".".join(["parameters", *(str(p) for p in e["loc"])])
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        else:
            got = "" if e["type"] == "missing" else f" (got {e.get('input')!r})"
            lines.append(f"  {key}: {e['msg']}{got}")
    return "\n".join(lines)


def apply_overrides(params: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides; values are parsed as YAML so numbers and lists keep their type."""
    out = copy.deepcopy(params)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. training.max_steps=20")
        key, raw = item.split("=", 1)
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: '{p}' is not a section")
        try:
            node[leaf] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(
                f"--set {item!r}: the value is not valid YAML: {getattr(err, 'problem', err)} "
                "(quote it to pass a string)"
            ) from None
    return out


def parse_config(params: dict[str, Any], source: str = "<config>") -> TunelineConfig:
    try:
        return TunelineConfig.model_validate(params)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(source, err)) from None


def _key_lines(text: str) -> dict[str, int]:
    """Line (1-based) of each top-level key, for errors that point at the file."""
    node = yaml.compose(text)
    return {k.value: k.start_mark.line + 1 for k, _ in node.value} if isinstance(node, yaml.MappingNode) else {}


def _check_top_level(path: Path, text: str, raw: dict[str, Any], allowed: Collection[str]) -> None:
    lines = _key_lines(text)
    for key in raw:
        if key not in allowed:
            near = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"; did you mean '{near[0]}'?" if near else f"; top-level keys are {sorted(allowed)}"
            raise ConfigError(f"{path}:{lines.get(key, 1)}: '{key}' is not a run-config key{hint}")


# Rules a model name must meet in both registries it goes to: MLflow's (mlflow.utils.validation._validate_model_name)
# and ZenML's (zenml.utils.string_utils.validate_name, its name columns' length). Checked at load time: a bad name
# would otherwise fail in promote, after a whole training.
_NAME_MAX = 255


def model_name_problem(name: Any) -> str | None:
    """Why `name` cannot name a model, or None."""
    if not isinstance(name, str) or not name.strip():
        return "must be a non-empty string"
    if bad := sorted({c for c in name if c in "/:" or (not c.isprintable() and c != " ")}):
        return f"must not contain {', '.join(repr(c) for c in bad)} (MLflow's and ZenML's registries refuse it)"
    if posixpath.normpath(name) != name or name.startswith(".."):
        return f"must not read as a file path (it would resolve to {posixpath.normpath(name)!r} in MLflow)"
    if len(name) > _NAME_MAX:
        return f"is {len(name)} characters long; at most {_NAME_MAX}"
    return None


def _check_model_name(path: Path, text: str, raw: dict[str, Any]) -> None:
    model = raw.get("model")
    if isinstance(model, dict) and "name" in model and (problem := model_name_problem(model["name"])):
        raise ConfigError(f"{path}:{_key_lines(text).get('model', 1)}: model.name {model['name']!r} {problem}")


def load_run_config(
    path: str | Path, overrides: list[str] = (), top_level_keys: Collection[str] | None = None
) -> tuple[TunelineConfig, dict[str, Any]]:
    """Read a run-config YAML; return the validated tuneline config and the remaining ZenML keys.

    `top_level_keys` are the keys a run config may have (ZenML's schema, passed in so this package stays free of
    ZenML); a key outside them is a typo that would otherwise be dropped silently.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {getattr(err, 'problem', err)}") from None
    if raw is None:
        raise ConfigError(f"{path}: the config file is empty; start from configs/finetune.yaml or configs/smoke.yaml")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    if top_level_keys is not None:
        _check_top_level(path, text, raw, [*top_level_keys, "parameters"])
    _check_model_name(path, text, raw)
    params = raw.pop("parameters", None) or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: 'parameters' must be a mapping of config sections")
    config = parse_config(apply_overrides(params, list(overrides)), str(path))
    return config, raw


def as_params(config: BaseModel) -> dict[str, Any]:
    """`{'training.learning_rate': 0.001, ...}`: the shape experiment trackers want for params."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = value

    walk("", config.model_dump())
    return flat
