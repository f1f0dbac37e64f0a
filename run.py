"""tuneline: one command per job, each reading the same run-config file.

    python run.py train --config configs/finetune.yaml [--set training.max_steps=50] [--no-cache] [--resume]
    python run.py prepare --config configs/finetune.yaml          # the data steps and report only
    python run.py evaluate --config configs/finetune.yaml --model-version 3|production|base
    python run.py export --config configs/finetune.yaml --model-version production [--out merged/]
    python run.py schedule --config configs/gpu-qwen2.5-lora.yaml --cron "0 3 * * 0"   # weekly retraining
    python run.py serve --config configs/finetune.yaml [--model-version production] [--shadow staging] [--stop]
    python run.py review export --config configs/finetune.yaml [--n 20 | --lowest-confidence 20] [--from-serving]
    python run.py review import reviews/review-tuneline-viggo-v3.csv
    python run.py monitor --config configs/finetune.yaml [--since 7d]   # drift and decline of served requests
    python run.py init --data my_data.jsonl [--task json] [--input FIELD --answer FIELD]
    python run.py tune --config configs/finetune.yaml --budget-minutes 30   # search a recipe, then train it

`python run.py --config FILE` (with --prepare-only, --evaluate-only, --export or --schedule CRON) still works: it
is `train` (or the subcommand the flag names). Exit codes: 0 done, 1 the work failed, 2 the input cannot run
(config, data, arguments; nothing was trained), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from runner.paths import from_user
from tuneline.config import load_run_config

# Which failures are the user's input (2) and which the work's (1): (module, class) so that nothing heavy is
# imported to look them up. Anything else is unexpected: exit 1 with its root cause (runner/failures.py).
EXIT_CODES = [
    ("tuneline.config", "ConfigError", 2),
    ("tuneline.data.sources", "DataError", 2),
    ("tuneline.data.proposal", "ProposalError", 2),
    ("tuneline.evaluate.review", "ReviewError", 2),
    ("runner.schedule", "ScheduleError", 2),
    ("runner.launch", "RefusedAtStart", 2),
    ("builtins", "FileExistsError", 2),
    ("runner.launch", "PipelineFailed", 1),
    ("runner.versions", "VersionNotFound", 1),
    ("runner.first_use", "FirstUseError", 1),
    ("runner.stack", "NoDeployer", 1),
    ("runner.serve", "DeployFailed", 1),
]


def exit_code(err: BaseException) -> int | None:
    """The code for one of tuneline's own errors, None for anything else."""
    for module, name, code in EXIT_CODES:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(err, cls):
            return code
    return None


def _summary_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--summary-json", type=from_user, help="write the run summary as one JSON object here")


def _config_args(p: argparse.ArgumentParser, cache: bool = True) -> None:
    p.add_argument("--config", type=from_user, required=True, help="a run config: ZenML keys and `parameters:`")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter, e.g. --set training.max_steps=20 (repeatable)",
    )
    if cache:
        p.add_argument("--no-cache", action="store_true", help="re-run every step even if ZenML has cached outputs")
    p.add_argument("--debug", action="store_true", help="also print Python tracebacks (they always go to the step log)")


def _version_arg(p: argparse.ArgumentParser, default: str | None = None, base: bool = False) -> None:
    p.add_argument(
        "--model-version",
        required=default is None,
        default=default,
        help="a version number or name, or a stage such as production" + (", or 'base'" if base else ""),
    )


def _window(text: str) -> str:
    from tuneline.serve.monitoring import window_ms

    try:
        window_ms(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = sub.add_parser("train", help="run the finetune pipeline: data, training, evaluation, promotion")
    _config_args(train)
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last checkpoint of an interrupted run (needs training.save_steps)",
    )
    _summary_arg(train)
    prepare = sub.add_parser("prepare", help="the data steps only; prints the data report (exit 1: gate failed)")
    _config_args(prepare)
    evaluate = sub.add_parser("evaluate", help="score a model version on the test set, no training")
    _config_args(evaluate)
    _version_arg(evaluate, base=True)
    export = sub.add_parser("export", help="merge a version's adapter into its base as a plain HF folder")
    _config_args(export)
    _version_arg(export)
    export.add_argument("--out", type=from_user, help="also copy the merged folder here")
    schedule = sub.add_parser("schedule", help="register the finetune pipeline on a cron schedule (no run now)")
    _config_args(schedule)
    schedule.add_argument("--cron", help="e.g. '0 3 * * 0'; default: the config's `schedule: cron_expression`")
    serve = sub.add_parser("serve", help="deploy a model version as an HTTP extraction service")
    _config_args(serve, cache=False)
    _version_arg(serve, default="production")
    serve.add_argument("--stop", action="store_true", help="remove the deployment")
    serve.add_argument(
        "--shadow", metavar="VERSION", help="also load this version (e.g. staging, 4) and record its answers beside"
    )
    monitor = sub.add_parser("monitor", help="judge the served model's recorded requests: ok, drift or decline")
    _config_args(monitor, cache=False)
    monitor.add_argument("--since", type=_window, help="the window, e.g. 7d, 12h, 30m; default: monitoring.window")
    monitor.add_argument("--cron", help="instead of running now, register it on this schedule, e.g. '0 * * * *'")
    review_parser(sub.add_parser("review", help="human review sheets for a model version"))
    init_parser(sub.add_parser("init", help="write a config for your own data file or folder"))
    tune = sub.add_parser("tune", help="search a recipe within a time budget, write it as a config, train it")
    _config_args(tune)
    tune.add_argument(
        "--budget-minutes", type=float, help="search and training together; default: tuning.budget_minutes"
    )
    tune.add_argument("--out", type=from_user, help="the tuned config; default: <config stem>.tuned.yaml beside it")
    _summary_arg(tune)
    return p


def review_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    sub = p.add_subparsers(dest="action", required=True)
    ex = sub.add_parser("export", help="write a CSV and HTML sheet of sampled test examples to score 1-5")
    ex.add_argument("--config", type=from_user, required=True)
    _version_arg(ex, default="production")
    which = ex.add_mutually_exclusive_group()
    which.add_argument("--n", type=int, default=20, help="how many test examples to sample")
    which.add_argument(
        "--lowest-confidence",
        type=int,
        metavar="N",
        help="instead: the N test examples the model was least confident of",
    )
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--out", type=from_user, default="reviews")
    ex.add_argument(
        "--from-serving",
        action="store_true",
        help="instead: the requests the version served (monitoring.window) it was least sure of, to correct",
    )
    im = sub.add_parser("import", help="validate a scored sheet and log its mean scores")
    im.add_argument("file", type=from_user)
    return p


def init_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--data", type=from_user, required=True, help="a .jsonl/.json/.csv/.parquet file or a folder")
    p.add_argument("--task", choices=["json", "viggo", "text"], help="default: what the answers parse as")
    p.add_argument("--input", dest="input_field", metavar="FIELD", help="the field the model reads")
    p.add_argument("--answer", dest="answer_field", metavar="FIELD", help="the field the model learns to write")
    p.add_argument("--out", type=from_user, help="default: configs/<data name>.yaml")
    p.add_argument("--force", action="store_true", help="overwrite --out")
    return p


def parse_review_args(argv: list[str]) -> argparse.Namespace:
    return review_parser(argparse.ArgumentParser(prog="run.py review")).parse_args(argv)


LEGACY = {"--prepare-only": "prepare", "--evaluate-only": "evaluate", "--export": "export", "--schedule": "schedule"}


def legacy_argv(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """`run.py --config F [--prepare-only | --evaluate-only | --export | --schedule CRON] ...` as a subcommand."""
    flags = [a for a in argv if a.split("=", 1)[0] in LEGACY]
    if len(flags) > 1:
        parser.error(f"{' and '.join(flags)} are different commands; give one")
    if not flags:
        return ["train", *argv]
    flag = flags[0].split("=", 1)[0]
    rest = [a for a in argv if a != flags[0]]
    if flag == "--schedule":
        rest = [("--cron" if a == "--schedule" else a.replace("--schedule=", "--cron=")) for a in argv]
    return [LEGACY[flag], *rest]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = legacy_argv(argv, parser)
    return parser.parse_args(argv)


def _setup_logging() -> None:
    """Inside steps ZenML prints (and stores) our `tuneline` logs; `runner` logs outside steps, so it gets a handler."""
    logging.getLogger("tuneline").setLevel(logging.INFO)
    runner = logging.getLogger("runner")
    runner.setLevel(logging.INFO)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("tuneline: %(message)s"))
    runner.addHandler(handler)
    runner.propagate = False


def _load(args: argparse.Namespace):
    """Every command reads its config the same way: top-level keys against ZenML's schema, parameters against ours."""
    from runner.console import run_config_keys  # imports ZenML's config schema (a few seconds)

    return load_run_config(args.config, args.overrides, top_level_keys=run_config_keys())


def preflight(config) -> None:
    """Fail before ZenML starts on what can be checked without running a step."""
    from tuneline.data.sources import DataError, looks_like_path

    source = config.data.source
    if looks_like_path(source) and not (path := Path(source).expanduser()).exists():
        raise DataError(f"data.source: no such file or folder: {source} (looked for {path.resolve()})")


def cmd_train(args, config, zenml_config) -> int:
    from runner import launch

    return _report(args, launch.launch(config, zenml_config, enable_cache=not args.no_cache, resume=args.resume))


def _report(args, summary) -> int:
    """A finetune run's summary: the table, and the JSON when --summary-json asks for it."""
    from runner.summary import render_table, write_json

    print(render_table(summary))
    if args.summary_json:
        write_json(summary, args.summary_json)
        print(f"summary written to {args.summary_json}")
    return 0


def cmd_prepare(args, config, zenml_config) -> int:
    from runner import launch
    from runner.summary import render_data_report

    report, error, quarantine = launch.launch_prepare(config, zenml_config, enable_cache=not args.no_cache)
    print(render_data_report(report))
    if report.reason_totals():
        print(f"quarantined rows, each with its file, line and reason: {quarantine}")
    if error:
        print(f"error: {error}", file=sys.stderr)
    return 1 if error else 0


def cmd_evaluate(args, config, zenml_config) -> int:
    from runner import launch
    from runner.summary import render_eval

    print(render_eval(launch.launch_evaluate(config, zenml_config, args.model_version, enable_cache=not args.no_cache)))
    return 0


def cmd_export(args, config, zenml_config) -> int:
    from runner import launch

    artifact = launch.launch_export(config, zenml_config, args.model_version, enable_cache=not args.no_cache)
    print(f"merged model: artifact 'merged_model' version {artifact.version} at {artifact.uri}/files")
    if args.out:
        import shutil

        shutil.copytree(artifact.load().path, args.out, dirs_exist_ok=True)
        print(f"copied to {args.out}")
    return 0


def cmd_schedule(args, config, zenml_config) -> int:
    from runner.schedule import create, describe

    print(describe(create(config, zenml_config, args.cron, enable_cache=not args.no_cache)))
    return 0


def cmd_serve(args, config, zenml_config) -> int:
    from runner import serve as serving

    if args.stop:
        print(f"removed deployment '{serving.stop(config, zenml_config)}'")
        return 0
    print(serving.describe(serving.serve(config, zenml_config, args.model_version, args.shadow)))
    return 0


def cmd_tune(args, config, zenml_config) -> int:
    from runner import tune

    return _report(args, tune.run(args, zenml_config))


def cmd_monitor(args, config, zenml_config) -> int:
    from runner import monitor
    from runner.summary import render_table

    if args.cron:
        from runner.schedule import describe

        print(describe(monitor.schedule(config, zenml_config, args.cron, args.since), "monitor"))
        return 0
    report = monitor.launch_monitor(config, zenml_config, args.since)
    print(
        f"{report.model_name}: {report.verdict} ({report.current.answers} answers, "
        f"{report.current.corrected} corrected, {report.new_corrections} corrections since production was trained)"
    )
    print("\n".join(f"  {reason}" for reason in report.reasons))
    if summary := monitor.retrain(config, zenml_config, report):
        print(render_table(summary))
    return 0


PIPELINE_COMMANDS = {
    "train": cmd_train,
    "prepare": cmd_prepare,
    "evaluate": cmd_evaluate,
    "export": cmd_export,
    "schedule": cmd_schedule,
    "serve": cmd_serve,
    "monitor": cmd_monitor,
    "tune": cmd_tune,
}


def cmd_review(args) -> int:
    if args.action == "import":
        from runner.review import import_sheet

        print(import_sheet(args.file))
        return 0
    from runner.review import export, export_served
    from runner.versions import model_name_of

    config, zenml_config = load_run_config(args.config)
    if args.from_serving:
        n, since = args.lowest_confidence or args.n, config.monitoring.window
        csv_path, html_path = export_served(model_name_of(config, zenml_config), args.model_version, n, since, args.out)
        print(
            f"review sheet: {csv_path} ({html_path}); write the right answers in 'reference', then: "
            f"python run.py review import {csv_path}"
        )
        return 0
    csv_path, html_path = export(
        model_name_of(config, zenml_config),
        args.model_version,
        args.n,
        args.seed,
        args.out,
        lowest_confidence=args.lowest_confidence,
    )
    print(
        f"review sheet: {csv_path} (read it as {html_path}); score each row 1-5, then: "
        f"python run.py review import {csv_path}"
    )
    return 0


def cmd_init(args) -> int:
    from runner.init_config import write_config
    from runner.paths import shown
    from tuneline.data.proposal import ProposalError
    from tuneline.data.sources import DataError

    try:
        proposal, written = write_config(
            args.data, args.out, args.task, args.force, args.input_field, args.answer_field
        )
    except (DataError, ProposalError, FileExistsError) as err:
        raise type(err)(f"{shown(args.data)}: {err}") from None
    out = shown(written)
    print(f"read {proposal.rows_read} rows of {shown(args.data)}:")
    print("\n".join(f"  {line}" for line in proposal.why))
    print(f"  fields (share of rows): {', '.join(f'{k} {v:.0%}' for k, v in proposal.coverage.items())}")
    if proposal.example:
        print(f"  one row as it will be learned: {proposal.example[0]!r} -> {proposal.example[1]!r}")
    print(
        f"wrote {out}: format '{proposal.format}', task '{proposal.task}'"
        + (f", input '{proposal.input_field}', answer '{proposal.output_field}'" if proposal.input_field else "")
    )
    print(f"next: python run.py prepare --config {out}, then python run.py train --config {out}")
    return 0


def _run_pipeline_command(args) -> int:
    from runner import interrupt, supervise

    if not supervise.in_child():
        return supervise.supervise()  # this command again, in a child process that Ctrl-C or `kill` surely stops
    interrupt.install()
    try:
        return _pipeline_command(args)
    except (KeyboardInterrupt, Exception):
        if interrupt.requested():
            interrupt.exit_now()  # however it ended, the supervising process marks the run failed and says so
        raise


def _pipeline_command(args) -> int:
    from runner.schedule import ScheduleError, requested_cron

    config, zenml_config = _load(args)
    preflight(config)
    # Taken out of the run config by every command; a bad cron is input (exit 2) before ZenML starts.
    cron = requested_cron(getattr(args, "cron", None), zenml_config)
    if args.command == "train" and cron:
        args.command, args.cron = "schedule", cron  # a config with a `schedule:` block registers it, as it always did
    if args.command == "schedule":
        if cron is None:
            raise ScheduleError("schedule: give --cron '0 3 * * 0' or a `schedule: cron_expression:` in the config")
        args.cron = cron
    from runner.console import hide_tracebacks

    if not args.debug:
        hide_tracebacks()
    return PIPELINE_COMMANDS[args.command](args, config, zenml_config)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    _setup_logging()
    try:
        if args.command == "review":
            return cmd_review(args)
        if args.command == "init":
            return cmd_init(args)
        return _run_pipeline_command(args)
    except Exception as err:  # noqa: BLE001  (every failure ends as one line; see EXIT_CODES)
        if getattr(args, "debug", False):
            raise
        code = exit_code(err)
        if code is None:
            from runner.failures import one_line

            print(f"error: {one_line(err)} (rerun with --debug for the traceback)", file=sys.stderr)
            return 1
        print(f"error: {err}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
