"""`training.budget_minutes`: training as long as the budget allows, measured on this machine, not guessed.

The Trainer runs with an upper bound of steps (MAX_EPOCHS over the rows); a callback times the first steps in
tokens per second, turns the rate into the steps that fill the budget (`plan`), and sets the Trainer's own
`state.max_steps` to them, the learning-rate schedule retargeted to end there. It plans again REPLANS times over
the run, from the rate since the last plan (a CPU's first steps are often slower or faster than the rest: the
first plan alone left a tenth of an 11-minute budget unused), and after each evaluation, with the evaluations'
measured cost; it stops the run when the budget is spent whatever the plan said.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass

import torch

log = logging.getLogger(__name__)

MEASURE_STEPS = 8  # steps timed after the first (which pays for allocation and compilation) before planning
# The most passes a budget buys: past that a small data set is memorized, not learned; a GPU's minutes on a few
# hundred rows would otherwise become hundreds of epochs.
MAX_EPOCHS = 10.0
REPLANS = 10  # plans after the first, spread over the planned steps


@dataclass(frozen=True)
class BudgetPlan:
    steps: int  # optimizer steps in all, those done included
    epochs: float
    rows: int  # distinct training rows seen
    tokens_per_second: float
    seconds_per_step: float
    limited_by: str  # "budget" or "max_epochs"
    why: str

    def as_dict(self) -> dict:
        return asdict(self)


def plan(
    budget_s: float,
    elapsed_s: float,
    done_steps: int,
    tokens_per_second: float,
    tokens_per_step: float,
    steps_per_epoch: float,
    n_rows: int,
    eval_every: int | None = None,
    eval_s: float = 0.0,
    max_epochs: float = MAX_EPOCHS,
) -> BudgetPlan:
    """The steps that fill what is left of the budget at the measured rate. Each evaluation to come costs `eval_s`
    (one every `eval_every` steps, and one more at the end); the plan never goes below the steps already done."""
    step_s = tokens_per_step / tokens_per_second
    per_step = step_s + (eval_s / eval_every if eval_every else 0.0)
    left = budget_s - elapsed_s - (eval_s if eval_every else 0.0)
    cap = max(1, math.ceil(max_epochs * steps_per_epoch))
    wanted = done_steps + max(0, math.floor(left / per_step))
    steps = max(done_steps, min(wanted, cap))
    epochs = steps / steps_per_epoch
    limited_by = "max_epochs" if wanted > cap else "budget"
    why = (
        f"{tokens_per_second:,.0f} tokens/s measured ({step_s:.2f}s per step of {tokens_per_step:,.0f} tokens"
        + (f", {eval_s:.1f}s per evaluation every {eval_every} steps" if eval_every and eval_s else "")
        + f"): {steps} steps = {epochs:.2f} epochs over {n_rows} rows "
        + (
            f"fill {budget_s / 60:.3g} min"
            if limited_by == "budget"
            else f"reach the {max_epochs:g}-epoch cap before {budget_s / 60:.3g} min"
        )
    )
    return BudgetPlan(
        steps=steps,
        epochs=round(epochs, 3),
        rows=min(n_rows, round(epochs * n_rows)),
        tokens_per_second=round(tokens_per_second, 1),
        seconds_per_step=round(step_s, 4),
        limited_by=limited_by,
        why=why,
    )


def retarget_schedule(scheduler, name: str, warmup_ratio: float, steps: int) -> None:
    """Make the Trainer's LambdaLR warm up and decay over `steps` from now on, as if it had been built for them."""
    from transformers import get_scheduler

    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    fresh = get_scheduler(name, probe, num_warmup_steps=int(warmup_ratio * steps), num_training_steps=steps)
    scheduler.lr_lambdas = [fresh.lr_lambdas[0]] * len(scheduler.lr_lambdas)


def _agreed(value: int, device) -> int:
    """Rank 0's value on every process: each times itself, and ranks that stop apart hang in the all-reduce."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    held = torch.tensor([value], device=device)
    torch.distributed.broadcast(held, src=0)
    return int(held.item())


def budget_callback(
    budget_minutes: float,
    tokens_per_step: float,
    steps_per_epoch: float,
    n_rows: int,
    first_guess: int,
    warmup_ratio: float,
):
    """`first_guess`: the steps the config's epochs would take, the schedule's target until the rate is known (at
    least the measured steps; at most the Trainer's upper bound)."""
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        """Times steps and evaluations, plans (see `plan`), and applies the plan through `state.max_steps`."""

        def __init__(self):
            self.budget_s = budget_minutes * 60
            self.plan: BudgetPlan | None = None
            self.evals, self.eval_s = 0, 0.0

        def on_train_begin(self, args, state, control, lr_scheduler=None, **kw):
            self.start = self.step_end = time.monotonic()
            self.first_step, self.mark = state.global_step, None
            measured = state.global_step + 1 + MEASURE_STEPS
            self._apply(args, state, lr_scheduler, min(state.max_steps, max(first_guess, measured)))

        def _apply(self, args, state, scheduler, steps: int) -> None:
            state.max_steps = steps
            retarget_schedule(scheduler, args.lr_scheduler_type, warmup_ratio, steps)

        def _replan(self, args, state, scheduler) -> None:
            now, (t0, tokens0, eval_s0) = time.monotonic(), self.mark  # since the last plan (or the first step)
            train_s = now - t0 - (self.eval_s - eval_s0)
            if state.num_input_tokens_seen > tokens0:
                rate = (state.num_input_tokens_seen - tokens0) / max(train_s, 1e-9)
            elif self.plan is not None:  # an evaluation right after a plan: only the evaluation's cost is new
                rate = self.plan.tokens_per_second
            else:
                return
            before = self.plan.steps if self.plan else None
            self.plan = plan(
                self.budget_s,
                now - self.start,
                state.global_step,
                rate,
                tokens_per_step,
                steps_per_epoch,
                n_rows,
                args.eval_steps if args.eval_strategy == "steps" else None,
                self.eval_s / self.evals if self.evals else 0.0,
            )
            steps = _agreed(self.plan.steps, args.device)
            self._apply(args, state, scheduler, steps)
            self.mark = (now, state.num_input_tokens_seen, self.eval_s)
            self.next_plan = state.global_step + max(MEASURE_STEPS, steps // REPLANS)  # the same step on every rank
            if self.plan.steps != before:
                log.info("budget: %s", self.plan.why if before is None else f"replanned: {self.plan.why}")

        def on_step_end(self, args, state, control, lr_scheduler=None, **kw):
            self.step_end = time.monotonic()
            stopped_by_plan = state.global_step >= state.max_steps  # the Trainer's own rule, which runs first
            if state.global_step == self.first_step + 1:
                self.mark = (self.step_end, state.num_input_tokens_seen, self.eval_s)
            elif self.plan is None and state.global_step == self.first_step + 1 + MEASURE_STEPS:
                self._replan(args, state, lr_scheduler)
            elif self.plan is not None and state.global_step >= self.next_plan:
                self._replan(args, state, lr_scheduler)
            if _agreed(int(self.step_end - self.start >= self.budget_s), args.device):
                log.info("budget: %g min spent at step %d; stopping", budget_minutes, state.global_step)
                state.max_steps = state.global_step
            if state.global_step >= state.max_steps:
                control.should_training_stop = True
            elif stopped_by_plan:  # a plan made at the last planned step grew it: go on
                control.should_training_stop = False

        def on_evaluate(self, args, state, control, lr_scheduler=None, **kw):
            if not control.should_training_stop:
                self.evals, self.eval_s = self.evals + 1, self.eval_s + time.monotonic() - self.step_end
                if self.mark:
                    self._replan(args, state, lr_scheduler)

        def summary(self, state) -> dict:
            """What the budget chose and why, for the run's summary; a run shorter than the measurement says so."""
            done = {
                "budget_minutes": budget_minutes,
                "steps": state.global_step,
                "epochs": round(state.global_step / steps_per_epoch, 3),
            }
            if self.plan is None:
                return done | {"why": f"the run ended after {state.global_step} steps, before its rate was measured"}
            return self.plan.as_dict() | {"planned_steps": self.plan.steps} | done

    return TimeBudget()
