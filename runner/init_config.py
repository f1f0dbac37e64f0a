"""`run.py init --data FILE`: a config for the user's own data, from the default recipe and `tuneline.proposal`.

The default config's recipe is kept; the data section is what the rows showed, the model gets a name of its own
(a model's versions compete with each other at promotion, so one name per task and data), and the primary metric
fits the task. The file is checked with the loader every run uses before it is written.
"""

from __future__ import annotations

import os
import re
import tempfile
from datetime import date
from pathlib import Path

import yaml

from tuneline.config import DataConfig, load_run_config
from tuneline.proposal import Proposal, propose
from tuneline.sources import load_splits

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "finetune.yaml"
PRIMARY_METRIC = {"json": "exact_match", "viggo": "exact_match", "text": "rougeL"}


def slug(path: Path) -> str:
    name = path.stem if path.is_file() else path.name
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "data"


def shown(path: Path) -> Path:
    """As the user would type it: relative when under the current folder."""
    return Path(os.path.relpath(path)) if path.resolve().is_relative_to(Path.cwd()) else path


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


def write_config(data: Path, out: Path | None = None, task: str | None = None, force: bool = False
                 ) -> tuple[Proposal, Path]:
    rows = [row for split in load_splits(DataConfig(source=str(data))).values() for row in split]
    proposal = propose(rows, task)
    out = out or ROOT / "configs" / f"{slug(data)}.yaml"
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; give --out or --force")
    # A relative folder without "./" would read as a hub id (tuneline.sources.looks_like_path).
    source = str(data) if data.is_absolute() or str(data).startswith(".") else f"./{data}"
    text = render(proposed_config(source, proposal, slug(data)), proposal, data, shown(out))
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as check:
        check.write(text)
        check.flush()
        load_run_config(check.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return proposal, out
