"""training.budget_minutes (rows and epochs from the measured rate), select_by primary_metric (the checkpoint that
scores best on validation) and init's proposed budget, on the tiny model."""

import itertools

import pytest
import torch
from safetensors.torch import load_file

from tuneline.train.budget import MAX_EPOCHS, MEASURE_STEPS, plan, retarget_schedule
from tuneline.config import LoraConfig, TrainingConfig
from tuneline.train.selection import primary_score
from tuneline.train.train_job import TrainJob
from tuneline.train.trainer import trainer_arguments


@pytest.fixture(scope="module")
def splits(tiny_tokenizer):
    from tuneline.config import DataConfig
    from tuneline.data.sources import load_splits
    from tuneline.data.validation import prepare

    data = DataConfig(source="synthetic:viggo")
    return prepare(load_splits(data), data, tiny_tokenizer).splits


def _plan(**kw):
    args = dict(
        budget_s=60.0,
        elapsed_s=5.0,
        done_steps=9,
        tokens_per_second=1000.0,
        tokens_per_step=500.0,
        steps_per_epoch=50.0,
        n_rows=400,
    )
    return plan(**args | kw)


def test_the_plan_follows_from_the_measured_rate():
    p = _plan()  # 0.5 s per step, 55 s left: 110 more steps
    assert (p.steps, p.epochs, p.rows, p.limited_by) == (119, 2.38, 400, "budget")
    assert "fill 1 min" in p.why and "1,000 tokens/s" in p.why
    assert _plan(tokens_per_second=2000.0).steps == 9 + 220  # twice the rate, twice the steps left
    short = _plan(budget_s=10.0, elapsed_s=0.0, done_steps=0)  # less than an epoch: a share of the rows
    assert (short.steps, short.epochs, short.rows) == (20, 0.4, 160)


def test_the_plan_counts_evaluations_and_never_goes_back():
    # One evaluation every 10 steps at 5 s adds 0.5 s a step, and one more is kept for the end: 50 s for 50 steps.
    assert _plan(eval_every=10, eval_s=5.0).steps == 9 + 50
    assert _plan(elapsed_s=90.0).steps == 9  # the budget is spent: stop where it is


def test_the_plan_stops_at_the_epoch_cap():
    p = _plan(budget_s=3600.0)
    assert (p.steps, p.epochs, p.rows, p.limited_by) == (MAX_EPOCHS * 50, MAX_EPOCHS, 400, "max_epochs")
    assert "epoch cap" in p.why


def test_retargeted_schedule_warms_up_and_ends_at_the_new_step_count():
    from transformers import get_scheduler

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=50, num_training_steps=1000)
    retarget_schedule(scheduler, "cosine", 0.1, 20)
    lrs = []
    for _ in range(20):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[1] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.0)  # 2 warmup steps, decayed by step 20


def _drive(monkeypatch, budget_s: float, step_s, replans: int | None = None):
    """A budget callback driven by a fake clock, the Trainer's own stop rule applied before it as the Trainer does;
    `step_s(step)` is each step's duration. Returns the callback, the clock at the end and the steps run."""
    from types import SimpleNamespace

    from transformers import TrainerControl

    from tuneline.train import budget

    clock = [0.0]
    monkeypatch.setattr(budget.time, "monotonic", lambda: clock[0])
    if replans:
        monkeypatch.setattr(budget, "REPLANS", replans)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    args = SimpleNamespace(lr_scheduler_type="cosine", eval_strategy="no", eval_steps=None, device="cpu")
    state = SimpleNamespace(global_step=0, max_steps=10_000, num_input_tokens_seen=0)
    control = TrainerControl()
    callback = budget.budget_callback(budget_s / 60, 100, 1000, 8000, 20, 0.0)
    callback.on_train_begin(args, state, control, lr_scheduler=scheduler)
    while not control.should_training_stop:
        clock[0] += step_s(state.global_step)
        state.global_step, state.num_input_tokens_seen = state.global_step + 1, state.num_input_tokens_seen + 100
        control.should_training_stop = state.global_step >= state.max_steps  # transformers' DefaultFlowCallback
        callback.on_step_end(args, state, control, lr_scheduler=scheduler)
    return callback, clock[0], state.global_step


def test_the_plan_follows_the_rate_when_steps_speed_up(monkeypatch):
    """Steps twice as fast after the first plan (a CPU warming up): the later plans fill the budget anyway; the
    first plan alone would have ended the run with almost half of it unused."""
    callback, seconds, steps = _drive(monkeypatch, 100, lambda step: 1.0 if step < 20 else 0.5)
    first_plan_ends = 20 + (100 - 20) * 0.5  # 100 steps planned at 1 s a step, run at 0.5 s after step 20
    assert first_plan_ends < 65 and 95 <= seconds <= 100.5, seconds
    assert steps == callback.plan.steps or seconds >= 100


def test_a_plan_that_grows_at_its_last_step_goes_on(monkeypatch):
    """Plans every 8 steps; the one at step 105, the last the plan before it allowed, finds the steps twice as
    fast and plans 8 more: the run goes on to them, although the Trainer's own rule has already said stop."""
    callback, seconds, steps = _drive(monkeypatch, 105, lambda step: 1.0 if step < 97 else 0.5, replans=10_000)
    assert steps == 113 and seconds == pytest.approx(105.0), (steps, seconds)


def test_budget_config():
    assert TrainingConfig().budget_minutes is None  # unset: epochs decide, as before
    with pytest.raises(ValueError, match="budget_minutes and max_steps"):
        TrainingConfig(budget_minutes=5, max_steps=10)


@pytest.mark.slow
def test_a_budgeted_run_plans_from_its_rate_and_stops_within_the_budget(tiny_model_dir, splits, tmp_path):
    from tuneline.train.training import train_lora

    budget_s = 2.0
    job = TrainJob(
        tiny_model_dir,
        splits["train"],
        [],
        tmp_path,
        lora=LoraConfig(r=4, alpha=8),
        training=TrainingConfig(budget_minutes=budget_s / 60, batch_size=2, threads=1),
    )
    result = train_lora(job)
    budget = result.choices["budget"]
    assert budget["planned_steps"] > MEASURE_STEPS + 1 and result.steps <= budget["planned_steps"]
    assert budget["tokens_per_second"] > 0 and "tokens/s measured" in budget["why"]
    assert budget["rows"] <= len(splits["train"]) and budget["epochs"] == round(result.steps / 48, 3)
    assert result.seconds < budget_s + 2.0  # the plan, or the stop when the budget is spent; one step may pass it
    if budget["limited_by"] == "budget":
        assert result.seconds > budget_s * 0.5  # it filled the budget, not a guess of it


def test_primary_score_and_the_trainer_arguments_that_select_by_it(tmp_path):
    refs = [["inform(name[A])"], ["request(genres[B])"]]
    assert primary_score("viggo", ["inform(name[A])", "request(genres[B])"], refs) == 1.0
    assert primary_score("viggo", ["inform(name[A])", "inform(name[B])"], refs) == 0.5
    cfg = TrainingConfig(select_by="primary_metric", eval_steps=5)
    args = trainer_arguments(TrainJob("unused", [], [], tmp_path, training=cfg), 20, evaluate_during=True)
    assert (args.metric_for_best_model, args.greater_is_better, args.load_best_model_at_end) == (
        "exact_match",
        True,
        True,
    )
    assert args.save_strategy == "steps" and args.save_steps == 5  # a checkpoint at each evaluation to go back to
    text = trainer_arguments(TrainJob("unused", [], [], tmp_path, training=cfg, task="text"), 20, True)
    assert text.metric_for_best_model == "rougeL"
    plain = trainer_arguments(TrainJob("unused", [], [], tmp_path), 20, evaluate_during=False)
    assert plain.metric_for_best_model is None and not plain.load_best_model_at_end


def test_select_by_config_checks():
    with pytest.raises(ValueError, match="select_by primary_metric needs eval_steps"):
        TrainingConfig(select_by="primary_metric")
    with pytest.raises(ValueError, match="save_steps to be a multiple of eval_steps"):
        TrainingConfig(select_by="primary_metric", eval_steps=5, save_steps=7)


@pytest.mark.slow
def test_the_best_scoring_checkpoint_is_kept_and_early_stopping_stops(tiny_model_dir, splits, tmp_path, monkeypatch):
    """Scores scripted per evaluation (0.6 at step 10, then worse): patience 2 stops at step 20, and the adapter
    returned is step 10's checkpoint, not the last one."""
    import tuneline.train.training

    scores = itertools.chain([0.2, 0.6, 0.4, 0.1], itertools.repeat(0.0))
    monkeypatch.setattr(
        tuneline.train.training,
        "validation_scorer",
        lambda task, tok, records: lambda model: {"exact_match": next(scores)},
    )
    cfg = TrainingConfig(
        max_steps=40,
        learning_rate=1e-2,
        batch_size=8,
        eval_steps=5,
        select_by="primary_metric",
        early_stopping_patience=2,
    )
    job = TrainJob(
        tiny_model_dir,
        splits["train"],
        splits["validation"][:4],
        tmp_path,
        lora=LoraConfig(r=4, alpha=8, dropout=0.0),
        training=cfg,
    )
    logged = []
    result = tuneline.train.training.train_lora(job, on_metrics=lambda step, values: logged.append((step, values)))
    assert [(s, v["eval_exact_match"]) for s, v in logged if "eval_exact_match" in v][:4] == [
        (5, 0.2),
        (10, 0.6),
        (15, 0.4),
        (20, 0.1),
    ]
    assert result.steps == 20
    assert result.choices["selected"] == {"metric": "exact_match", "value": 0.6, "step": 10, "of_steps": 20}
    kept = load_file(tmp_path / "checkpoints" / "checkpoint-10" / "adapter_model.safetensors")
    last = load_file(tmp_path / "checkpoints" / "checkpoint-20" / "adapter_model.safetensors")
    returned = load_file(result.adapter_dir / "adapter_model.safetensors")
    assert all(torch.equal(returned[k], kept[k]) for k in kept)
    assert not all(torch.equal(returned[k], last[k]) for k in last)


@pytest.mark.slow
def test_select_by_primary_metric_generates_during_training(tiny_model_dir, splits, tmp_path):
    from tuneline.train.training import train_lora

    cfg = TrainingConfig(max_steps=10, batch_size=8, eval_steps=5, select_by="primary_metric")
    job = TrainJob(
        tiny_model_dir, splits["train"], splits["validation"][:4], tmp_path, lora=LoraConfig(r=4, alpha=8), training=cfg
    )
    logged = []
    result = train_lora(job, on_metrics=lambda step, values: logged.append((step, values)))
    scored = [(s, v["eval_exact_match"]) for s, v in logged if "eval_exact_match" in v]
    assert [s for s, _ in scored][:2] == [5, 10] and all(0.0 <= v <= 1.0 for _, v in scored)
    best = max(scored[:2], key=lambda sv: sv[1])  # the first of equals: a later one must score higher
    assert result.choices["selected"]["step"] == best[0]


@pytest.mark.parametrize(
    "rows, where, minutes",
    [(1890, "CPU", 15), (200, "CPU", 4), (5103, "CUDA GPU", 3), (50000, "CUDA GPU", 5), (10, "CPU", 1)],
)
def test_init_proposes_a_budget_from_the_rows_and_the_machine(rows, where, minutes):
    from runner.init_config import propose_budget

    got, why = propose_budget(rows, where)
    assert got == minutes and f"training.budget_minutes {minutes}:" in why and where in why


def test_init_writes_budget_minutes_instead_of_viggos_rows_and_epochs(tmp_path, monkeypatch):
    import json

    import runner.init_config
    from tuneline.config import load_run_config

    data = tmp_path / "intents.jsonl"
    data.write_text(
        "".join(json.dumps({"text": f"book table {i}", "label": json.dumps({"n": i})}) + "\n" for i in range(300))
    )
    monkeypatch.setattr(runner.init_config, "machine", lambda: "CPU")
    _, out = runner.init_config.write_config(data, tmp_path / "intents.yaml", task="json")
    config, _ = load_run_config(out)
    assert config.training.budget_minutes == 5  # 255 training rows x 3 epochs at ~180 rows/min
    assert config.data.max_train_samples is None and config.training.epochs == 1.0  # no ViGGO numbers
    assert "# training.budget_minutes 5: 255 training rows" in out.read_text()
