"""tuneline: run the finetune pipeline from one run-config file.

    python run.py --config configs/finetune.yaml [--set training.max_steps=50] [--no-cache] [--summary-json out.json]
    python run.py --config configs/finetune.yaml --resume      # after an interrupted run, from its last checkpoint
    python run.py --config configs/gpu-qwen2.5-lora.yaml --schedule "0 3 * * 0"   # register weekly retraining
    python run.py --config configs/finetune.yaml --prepare-only [--debug]   # --debug: also print tracebacks
    python run.py --config configs/finetune.yaml --evaluate-only --model-version 3|production|base
    python run.py --config configs/finetune.yaml --export --model-version production [--out merged/]
    python run.py review export --config configs/finetune.yaml --model-version production [--n 20] [--out reviews]
    python run.py review import reviews/review-tuneline-viggo-v3.csv
    python run.py serve --config configs/finetune.yaml [--model-version production]   # HTTP extraction service
    python run.py serve --config configs/finetune.yaml --stop
    python run.py init --data my_data.jsonl [--task json] [--out configs/my_data.yaml]   # a config for your data
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


from runner.paths import from_user
from runner.schedule import ScheduleError, requested_cron
from tuneline.config import ConfigError, load_run_config
from tuneline.sources import DataError, looks_like_path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=from_user, required=True, help="ZenML run config with a tuneline `parameters:` block")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a parameter, e.g. --set training.max_steps=20 (repeatable)")
    p.add_argument("--no-cache", action="store_true", help="re-run every step even if ZenML has cached outputs")
    p.add_argument("--resume", action="store_true",
                   help="continue training from the last checkpoint of an interrupted run (needs training.save_steps)")
    p.add_argument("--prepare-only", action="store_true",
                   help="run only the data steps and print the data report; exit 1 when the reject limit is crossed")
    p.add_argument("--evaluate-only", action="store_true", help="score --model-version on the test set, no training")
    p.add_argument("--export", action="store_true",
                   help="merge --model-version's adapter into its base and store a plain HF folder as an artifact")
    p.add_argument("--out", type=from_user, help="with --export: also copy the merged folder here")
    p.add_argument("--model-version", help="a version number or name, a stage, or (for --evaluate-only) 'base'")
    p.add_argument("--summary-json", type=from_user, help="write the run summary as one JSON object here")
    p.add_argument("--debug", action="store_true", help="also print Python tracebacks (they always go to the step log)")
    p.add_argument("--schedule", metavar="CRON",
                   help="register the finetune pipeline on this cron schedule (e.g. '0 3 * * 0') instead of running "
                        "it now; needs a stack whose orchestrator runs schedules")
    args = p.parse_args(argv)
    if (args.evaluate_only or args.export) and not args.model_version:
        p.error("--evaluate-only and --export need --model-version (a number, or a stage such as production)")
    if args.schedule and (args.resume or args.prepare_only or args.evaluate_only or args.export or args.summary_json):
        p.error("--schedule registers future runs: it goes with none of --resume, --prepare-only, --evaluate-only, "
                "--export, --summary-json")
    return args


def parse_review_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="run.py review", description="Human review sheets for a model version.")
    sub = p.add_subparsers(dest="action", required=True)
    ex = sub.add_parser("export", help="write a CSV and HTML sheet of sampled test examples to score 1-5")
    ex.add_argument("--config", type=from_user, required=True)
    ex.add_argument("--model-version", default="production")
    which = ex.add_mutually_exclusive_group()
    which.add_argument("--n", type=int, default=20, help="how many test examples to sample")
    which.add_argument("--lowest-confidence", type=int, metavar="N",
                       help="instead: the N test examples the model was least confident of")
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--out", type=Path, default=Path("reviews"))
    im = sub.add_parser("import", help="validate a scored sheet and log its mean scores")
    im.add_argument("file", type=from_user)
    return p.parse_args(argv)


def review(argv: list[str]) -> int:
    args = parse_review_args(argv)
    from tuneline.review import ReviewError

    try:
        if args.action == "export":
            _, zenml_config = load_run_config(args.config)
            from runner.review import export

            model_name = zenml_config.get("model", {}).get("name")
            if not model_name:
                raise ConfigError(f"{args.config}: no 'model: name:' to take versions from")
            csv_path, html_path = export(model_name, args.model_version, args.n, args.seed, args.out,
                                         lowest_confidence=args.lowest_confidence)
            print(f"review sheet: {csv_path} (read it as {html_path}); score each row 1-5, then: "
                  f"python run.py review import {csv_path}")
        else:
            from runner.review import import_scores

            model_name, version, means, n = import_scores(args.file)
            scores = ", ".join(f"{k} {v:.2f}" for k, v in means.items())
            print(f"imported {n} reviewed rows for {model_name} version {version}: {scores}")
    except (ReviewError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def parse_serve_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="run.py serve", description="Deploy the extract pipeline for a model version.")
    p.add_argument("--config", type=from_user, required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a parameter, e.g. --set serving.port=8000 (repeatable)")
    p.add_argument("--model-version", default="production",
                   help="a number or name (pinned), or a stage (followed: each new promotion is swapped in)")
    p.add_argument("--stop", action="store_true", help="remove the deployment")
    return p.parse_args(argv)


def serve(argv: list[str]) -> int:
    args = parse_serve_args(argv)
    _setup_logging()
    try:
        config, zenml_config = load_run_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from runner import serve as serving
    from runner.launch import PipelineFailed
    from runner.stack import NoDeployer

    if args.stop:
        print(f"removed deployment '{serving.stop(config, zenml_config)}'")
        return 0
    try:
        deployment = serving.serve(config, zenml_config, args.model_version)
    except (PipelineFailed, NoDeployer, serving.DeployFailed) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(serving.describe(deployment))
    return 0


def init(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="run.py init", description="Write a config for your own data file or folder.")
    p.add_argument("--data", type=from_user, required=True,
                   help="a .jsonl/.json/.csv/.parquet file or a folder of splits")
    p.add_argument("--task", choices=["json", "viggo", "text"], help="default: what the answers parse as")
    p.add_argument("--input", dest="input_field", metavar="FIELD", help="the field the model reads")
    p.add_argument("--answer", dest="answer_field", metavar="FIELD", help="the field the model learns to write")
    p.add_argument("--out", type=from_user, help="default: configs/<data name>.yaml")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    args = p.parse_args(argv)
    from runner.init_config import write_config
    from runner.paths import shown
    from tuneline.proposal import ProposalError

    try:
        proposal, written = write_config(args.data, args.out, args.task, args.force, args.input_field,
                                         args.answer_field)
    except (DataError, ProposalError, ConfigError, FileExistsError) as err:
        print(f"error: {shown(args.data)}: {err}", file=sys.stderr)
        return 2
    out = shown(written)
    print(f"read {proposal.rows_read} rows of {shown(args.data)}:")
    print("\n".join(f"  {line}" for line in proposal.why))
    print(f"  fields (share of rows): {', '.join(f'{k} {v:.0%}' for k, v in proposal.coverage.items())}")
    if proposal.example:
        print(f"  one row as it will be learned: {proposal.example[0]!r} -> {proposal.example[1]!r}")
    print(f"wrote {out}: format '{proposal.format}', task '{proposal.task}'"
          + (f", input '{proposal.input_field}', answer '{proposal.output_field}'" if proposal.input_field else ""))
    print(f"next: python run.py --config {out} --prepare-only, then python run.py --config {out}")
    return 0


def preflight(config) -> None:
    """Fail before ZenML starts on what can be checked without running a step."""
    source = config.data.source
    if looks_like_path(source) and not (path := Path(source).expanduser()).exists():
        raise DataError(f"data.source: no such file or folder: {source} (looked for {path.resolve()})")


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
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["review"]:
        return review(argv[1:])
    if argv[:1] == ["serve"]:
        return serve(argv[1:])
    if argv[:1] == ["init"]:
        return init(argv[1:])
    args = parse_args(argv)
    _setup_logging()
    from runner.console import hide_tracebacks, run_config_keys  # imports ZenML's config schema (a few seconds)

    try:
        config, zenml_config = load_run_config(args.config, args.overrides, top_level_keys=run_config_keys())
        preflight(config)
        args.schedule = requested_cron(args.schedule, zenml_config)
    except (ConfigError, DataError, ScheduleError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from runner.first_use import FirstUseError
    from runner import interrupt
    from runner.launch import PipelineFailed, RefusedAtStart  # slow to import (ZenML): bad configs fail before this

    if not args.debug:
        hide_tracebacks()
    interrupt.install()
    try:
        return _run_mode(args, config, zenml_config)
    except (ScheduleError, RefusedAtStart) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (PipelineFailed, FirstUseError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"error: {interrupt.stopped()}", file=sys.stderr)
        return 130
    except Exception as err:  # outside tuneline's own checks (a full disk, a read-only store): the cause, last
        if args.debug:
            raise
        from runner.failures import one_line

        print(f"error: {one_line(err)} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


def _run_mode(args: argparse.Namespace, config, zenml_config: dict) -> int:
    from runner import launch as runs
    from runner.summary import render_data_report, render_eval, render_table, write_json

    cache = not args.no_cache
    if args.export:
        artifact = runs.launch_export(config, zenml_config, args.model_version, enable_cache=cache)
        print(f"merged model: artifact 'merged_model' version {artifact.version} at {artifact.uri}/files")
        if args.out:
            import shutil

            shutil.copytree(artifact.load().path, args.out, dirs_exist_ok=True)
            print(f"copied to {args.out}")
        return 0
    if args.evaluate_only:
        print(render_eval(runs.launch_evaluate(config, zenml_config, args.model_version, enable_cache=cache)))
        return 0
    if args.prepare_only:
        report, error, quarantine = runs.launch_prepare(config, zenml_config, enable_cache=cache)
        print(render_data_report(report))
        if report.reason_totals():
            print(f"quarantined rows, each with its file, line and reason: {quarantine}")
        if error:
            print(f"error: {error}", file=sys.stderr)
        return 1 if error else 0
    if args.schedule:
        from runner.schedule import create, describe

        print(describe(create(config, zenml_config, args.schedule, enable_cache=cache)))
        return 0
    summary = runs.launch(config, zenml_config, enable_cache=cache, resume=args.resume)
    print(render_table(summary))
    if args.summary_json:
        write_json(summary, args.summary_json)
        print(f"summary written to {args.summary_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
