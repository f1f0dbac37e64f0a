"""`run.py init --data FILE`: a config for the user's own data, from the default recipe and `tuneline.proposal`.

The default config's recipe is kept; the data section is what the rows showed, the model gets a name of its own
(a model's versions compete with each other at promotion, so one name per task and data), and the primary metric
fits the task. The file is checked with the loader every run uses before it is written.
"""

from __future__ import annotations

import re
import tempfile
from datetime import date
from pathlib import Path

import yaml

from runner.paths import shown
from tuneline.config import DataConfig, load_run_config
from tuneline.proposal import Proposal, propose
from tuneline.sources import load_splits

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "finetune.yaml"
PRIMARY_METRIC = {"json": "exact_match", "viggo": "exact_match", "text": "rougeL"}


def slug(path: Path) -> str:
    name = path.stem if path.is_file() else path.name
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "data"


def proposed_config(source: str, proposal: Proposal, name: str) -> dict:
    config = yaml.safe_load(RECIPE.read_text())
    config["model"] = {"name": f"tuneline-{name}", "description": f"LoRA for task '{proposal.task}' on {source}."}
    params = config["parameters"]
    recipe_data = params["data"]
    params["data"] = proposal.data_section(source) | {
        k: recipe_data[k] for k in ("system_prompt", "max_train_samples", "max_validation_samples", "seed")}
    params["promotion"]["primary_metric"] = PRIMARY_METRIC[proposal.task]
    return config


def render(config: dict, proposal: Proposal, data: Path, out: Path) -> str:
    header = [f"# Written by `python run.py init --data {data}` on {date.today()}; read it, then:",
              f"#   python run.py --config {out} --prepare-only   # the data report: formats, fields, quarantine",
              f"#   python run.py --config {out}",
              f"# From {proposal.rows_read} rows read:"]
    header += [f"#   {line}" for line in proposal.why]
    header += ["# The rest is the default recipe (configs/finetune.yaml), sized for a 2-core CPU; on a GPU raise",
               "# data.max_train_samples and training.epochs. model.name is this data's own lineage: versions of one",
               "# name are compared with each other at promotion."]
    return "\n".join(header) + "\n" + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def _source_text(data: Path) -> str:
    """`data` as the config should name it: relative to the folder run.py runs in when it is below it (with "./":
    a relative folder without it would read as a hub id, see tuneline.sources.looks_like_path), else absolute."""
    if not data.is_absolute():
        return str(data) if str(data).startswith(".") else f"./{data}"
    here = Path.cwd().resolve()
    return f"./{data.resolve().relative_to(here)}" if data.resolve().is_relative_to(here) else str(data)


def write_config(data: Path, out: Path | None = None, task: str | None = None, force: bool = False,
                 input_field: str | None = None, answer_field: str | None = None) -> tuple[Proposal, Path]:
    rows = [row for split in load_splits(DataConfig(source=str(data))).values() for row in split]
    proposal = propose(rows, task, input_field, answer_field)
    out = out or ROOT / "configs" / f"{slug(data)}.yaml"
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; give --out or --force")
    source = _source_text(data)
    text = render(proposed_config(source, proposal, slug(data)), proposal, data, shown(out))
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as check:
        check.write(text)
        check.flush()
        load_run_config(check.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return proposal, out
