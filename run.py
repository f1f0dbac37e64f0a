"""tuneline: run the finetune pipeline from one run-config file.

    python run.py --config configs/finetune.yaml [--set training.max_steps=50] [--no-cache] [--summary-json out.json]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import yaml

from tuneline.config import ConfigError, load_run_config
from tuneline.sources import DataError, looks_like_path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="ZenML run config with a tuneline `parameters:` block")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a parameter, e.g. --set training.max_steps=20 (repeatable)")
    p.add_argument("--no-cache", action="store_true", help="re-run every step even if ZenML has cached outputs")
    p.add_argument("--prepare-only", action="store_true",
                   help="run only the data steps and print the data report; exit 1 when the reject limit is crossed")
    p.add_argument("--summary-json", type=Path, help="write the run summary as one JSON object here")
    return p.parse_args(argv)


def preflight(config) -> None:
    """Fail before ZenML starts on what can be checked without running a step."""
    source = config.data.source
    if looks_like_path(source) and not Path(source).expanduser().exists():
        raise DataError(f"data.source: no such file or folder: {Path(source).expanduser()}")


def _setup_logging() -> None:
    """Inside steps ZenML prints (and stores) our `tuneline` logs; `runner` logs outside steps, so it gets a handler."""
    logging.getLogger("tuneline").setLevel(logging.INFO)
    runner = logging.getLogger("runner")
    runner.setLevel(logging.INFO)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("tuneline: %(message)s"))
    runner.addHandler(handler)
    runner.propagate = False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _setup_logging()
    try:
        config, zenml_config = load_run_config(args.config, args.overrides)
        preflight(config)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from runner.launch import PipelineFailed, launch, launch_prepare  # slow import: bad configs fail first
    from runner.summary import render_data_report, render_table, write_json

    if args.prepare_only:
        try:
            report, error = launch_prepare(config, zenml_config, enable_cache=not args.no_cache)
        except PipelineFailed as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(render_data_report(report))
        if error:
            print(f"error: {error}", file=sys.stderr)
        return 1 if error else 0

    try:
        summary = launch(config, zenml_config, enable_cache=not args.no_cache)
    except PipelineFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(render_table(summary))
    if args.summary_json:
        write_json(summary, args.summary_json)
        print(f"summary written to {args.summary_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
