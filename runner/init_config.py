"""`run.py init --data FILE`: a config for the user's own data, from the default recipe and `tuneline.data.proposal`.

The default config's recipe is kept, but for how long it trains: instead of ViGGO's rows and epochs, a time
budget proposed from the data's size and this machine (`propose_budget`), which the train step fills at the rate
it measures. The data section is what the rows showed, the model gets a name of its own (a model's versions
compete with each other at promotion, so one name per task and data), and the primary metric fits the task. The
file is checked with the loader every run uses before it is written.
"""

from __future__ import annotations

import math
import re
import tempfile
import textwrap
from datetime import date
from pathlib import Path

import yaml

from runner.paths import shown
from tuneline.config import DataConfig, load_run_config
from tuneline.data.proposal import Proposal, propose
from tuneline.train.selection import PRIMARY_METRIC
from tuneline.data.sources import load_splits

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "finetune.yaml"
# A first guess of the default recipe's training rows per minute (docs/benchmarks.md, ViGGO: about 180 on a 2-core
# CPU, 6,400 on one H100); the train step measures the real rate and fills the budget with it.
ROWS_PER_MINUTE = {"CPU": 180, "CUDA GPU": 6400}
BUDGET_CAP = {"CPU": 15, "CUDA GPU": 5}  # minutes: the CPU pipeline stays near 20 minutes with its evaluations
WANTED_EPOCHS = 3  # all of ViGGO three times reached exact match 0.926 on a GPU (docs/gpu.md)


def slug(path: Path) -> str:
    name = path.stem if path.is_file() else path.name
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "data"


def machine() -> str:
    import torch

    return "CUDA GPU" if torch.cuda.is_available() else "CPU"


def propose_budget(train_rows: int, where: str) -> tuple[int, str]:
    """Minutes for WANTED_EPOCHS over the rows at the guessed rate, at least 1 and at most the machine's cap; and
    the sentence that says so in the written config."""
    wanted = math.ceil(train_rows * WANTED_EPOCHS / ROWS_PER_MINUTE[where])
    minutes = min(BUDGET_CAP[where], max(1, wanted))
    why = (
        f"training.budget_minutes {minutes}: {train_rows} training rows x {WANTED_EPOCHS} epochs at about "
        f"{ROWS_PER_MINUTE[where]} rows/min on a {where} is {wanted} min"
        + (f", capped at {minutes}" if wanted > minutes else "")
        + "; the train step measures its real rate and sets rows and epochs to fill it"
    )
    return minutes, why


def proposed_config(source: str, proposal: Proposal, name: str, budget_minutes: int) -> dict:
    config = yaml.safe_load(RECIPE.read_text())
    config["model"] = {"name": f"tuneline-{name}", "description": f"LoRA for task '{proposal.task}' on {source}."}
    params = config["parameters"]
    recipe_data = params["data"]
    params["data"] = proposal.data_section(source) | {
        k: recipe_data[k] for k in ("system_prompt", "max_validation_samples", "seed")
    }
    params["training"] = {k: v for k, v in params["training"].items() if k != "epochs"}
    params["training"]["budget_minutes"] = budget_minutes
    params["promotion"]["primary_metric"] = PRIMARY_METRIC[proposal.task]
    return config


def render(config: dict, proposal: Proposal, data: Path, out: Path, budget_why: str) -> str:
    header = [
        f"# Written by `python run.py init --data {data}` on {date.today()}; read it, then:",
        f"#   python run.py --config {out} --prepare-only   # the data report: formats, fields, quarantine",
        f"#   python run.py --config {out}",
        f"# From {proposal.rows_read} rows read:",
    ]
    header += [f"#   {line}" for line in proposal.why]
    header += [f"# {line}" for line in textwrap.wrap(budget_why + ".", 112)]
    header += [
        "# The rest is the default recipe (configs/finetune.yaml). model.name is this data's own lineage:",
        "# versions of one name are compared with each other at promotion.",
    ]
    return "\n".join(header) + "\n" + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def _source_text(data: Path) -> str:
    """`data` as the config should name it: relative to the folder run.py runs in when it is below it (with "./":
    a relative folder without it would read as a hub id, see tuneline.data.sources.looks_like_path), else absolute."""
    if not data.is_absolute():
        return str(data) if str(data).startswith(".") else f"./{data}"
    here = Path.cwd().resolve()
    return f"./{data.resolve().relative_to(here)}" if data.resolve().is_relative_to(here) else str(data)


def write_config(
    data: Path,
    out: Path | None = None,
    task: str | None = None,
    force: bool = False,
    input_field: str | None = None,
    answer_field: str | None = None,
) -> tuple[Proposal, Path]:
    splits = load_splits(DataConfig(source=str(data)))
    proposal = propose([row for split in splits.values() for row in split], task, input_field, answer_field)
    budget, budget_why = propose_budget(len(splits.get("train", [])), machine())
    out = out or ROOT / "configs" / f"{slug(data)}.yaml"
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; give --out or --force")
    source = _source_text(data)
    text = render(proposed_config(source, proposal, slug(data), budget), proposal, data, shown(out), budget_why)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as check:
        check.write(text)
        check.flush()
        load_run_config(check.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return proposal, out
