"""Load on the `extract` deployment: concurrent clients on loopback, one text per request against batches.

    python benchmarks/serve_load.py [--config configs/finetune.yaml] [--model-version production]
        [--clients 8] [--seconds 60] [--batch 16] [--batching both|on|off] [--switch-to VERSION] [--record-cost]
        [--compare batching,recording [--endpoint invoke|openai]] [--json]

Deploys the config's model (`run.py serve`'s own code) unless `--url` (and `--key`) name a running deployment,
then for each mode runs `--clients` threads that send requests back to back for `--seconds`, with ViGGO test
inputs. Per mode: requests/s, texts/s, latency p50/p95/p99, failed requests (anything but a successful 200), and
where the time of a request goes: generation (the model), ZenML's run bookkeeping (execution time less
generation) and the rest (HTTP, validation, queueing). Peak RSS is the server process's high-water mark.

`--batching both` (the default) deploys twice, with batching across requests off (serving.max_batch_tokens=1)
and then on (the config's serving.*), runs the modes on each, and prints the two side by side: texts/s, p50,
failed requests, and whether every text answered under both got the same answer. `--url` measures the
deployment as it is.

`--compare batching,recording` measures only one-text requests, on one deployment per setup: batching across
requests off and on, times serving.record off and full (`--compare batching`: the config's recording;
`--compare recording`: batching on). One table: texts/s, p50, p95, failed requests, and how many of the texts
answered under both a setup and the first one got the same answer (greedy decoding: all of them); below it, what
batching changes (texts/s, p50) and what recording adds to the p50 (the target is under 5%). `--endpoint openai`
sends them to /v1/chat/completions, which answers through the same batcher without ZenML's pipeline run per request.

`--record-cost` then deploys twice more, with serving.record off and full, runs the one-text mode on each and
prints the same table for them (`--compare recording` after the modes).

`--switch-to V` runs the one-text mode once more while version V is promoted to production mid-run (the
deployment, serving the production stage, swaps it in); production goes back to the old version afterwards.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tuneline.config import load_run_config  # noqa: E402


@dataclass
class ModeResult:
    mode: str
    texts_per_request: int
    requests: int = 0
    failed: int = 0
    texts: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list, repr=False)
    generation: list[float] = field(default_factory=list, repr=False)
    bookkeeping: list[float] = field(default_factory=list, repr=False)
    models: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    answers: dict[str, str] = field(default_factory=dict, repr=False)  # text -> answer, compared across runs

    def pct(self, values: list[float], q: int) -> float:
        return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else (values or [0])[0]

    def row(self) -> dict:
        ok = self.requests - self.failed
        return {
            "mode": self.mode,
            "texts/req": self.texts_per_request,
            "requests": self.requests,
            "failed": self.failed,
            "req/s": ok / self.seconds,
            "texts/s": self.texts / self.seconds,
            "p50 s": self.pct(self.latencies, 50),
            "p95 s": self.pct(self.latencies, 95),
            "p99 s": self.pct(self.latencies, 99),
            "gen p50 s": self.pct(self.generation, 50),
            "zenml p50 s": self.pct(self.bookkeeping, 50),
            "models": self.models,
            "errors": self.errors[:3],
        }


@dataclass(frozen=True)
class Setup:
    """What a deployment is started with: batching across requests on (the config's serving.*) or off (a budget of
    one token: each request is a batch of its own), and serving.record."""

    batching: str
    record: str

    def __str__(self) -> str:
        return f"batching {self.batching}, record {self.record}"

    def configure(self, config):
        serving = {"record": self.record} | ({"max_batch_tokens": 1} if self.batching == "off" else {})
        return config.model_copy(update={"serving": config.serving.model_copy(update=serving)})


AXES = {"batching": ("off", "on"), "recording": ("off", "full")}
RECORDING_TARGET = 0.05  # what recording may add to the one-text p50


def axes(value: str) -> list[str]:
    names = [a.strip() for a in value.split(",") if a.strip()]
    if not names or set(names) - AXES.keys():
        raise argparse.ArgumentTypeError(f"a comma list of {', '.join(AXES)}, got {value!r}")
    return names


def setups(compared: list[str], record: str) -> list[Setup]:
    """Every combination of the compared axes; an axis not compared stays as configured (batching on)."""
    batching = AXES["batching"] if "batching" in compared else ("on",)
    recording = AXES["recording"] if "recording" in compared else (record,)
    return [Setup(b, r) for b, r in itertools.product(batching, recording)]


def invoke(url: str, key: str | None, texts: list[str], endpoint: str = "invoke") -> tuple[int, dict]:
    """(status, reply) of one request; `endpoint` 'openai' asks /v1/chat/completions (one text, no pipeline run)
    and returns its reading in /invoke's shape."""
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
    if endpoint == "openai":
        path, payload = "/v1/chat/completions", {"model": _served_model(url, headers), "messages": _user(texts)}
    else:
        path, payload = "/invoke", {"parameters": {"texts": texts}, "skip_artifact_materialization": True}
    try:
        request = urllib.request.Request(url + path, json.dumps(payload).encode(), headers)
        with urllib.request.urlopen(request, timeout=300) as reply:
            status, body = reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, {"error": err.read().decode()[:300]}
    except OSError as err:  # refused or reset: the server was not there
        return 0, {"error": repr(err)}
    return status, body if endpoint != "openai" else _as_invoke(texts[0], body)


def _user(texts: list[str]) -> list[dict]:
    if len(texts) != 1:
        raise SystemExit("--endpoint openai sends one text per request: use --compare or the one-text mode")
    return [{"role": "user", "content": texts[0]}]


_models: dict[str, str] = {}


def _served_model(url: str, headers: dict) -> str:
    if url not in _models:
        with urllib.request.urlopen(urllib.request.Request(url + "/v1/models", headers=headers), timeout=60) as r:
            _models[url] = json.loads(r.read())["data"][0]["id"]
    return _models[url]


def _as_invoke(text: str, completion: dict) -> dict:
    reading = completion["tuneline"]
    answer = {"text": text, "answer": completion["choices"][0]["message"]["content"]}
    extractions = {"results": [answer], "seconds": reading.get("seconds", 0.0), "model": reading["model"]}
    return {"success": True, "outputs": {"extractions": extractions}, "execution_time": extractions["seconds"]}


def drive(
    url: str,
    key: str | None,
    inputs: list[str],
    mode: str,
    per_request: int,
    clients: int,
    seconds: float,
    during=None,
    endpoint: str = "invoke",
) -> ModeResult:
    result, lock = ModeResult(mode, per_request), threading.Lock()
    deadline = time.monotonic() + seconds

    def client(k: int) -> None:
        i = k * 97
        while time.monotonic() < deadline:
            texts = [inputs[(i + j) % len(inputs)] for j in range(per_request)]
            i += per_request
            start = time.monotonic()
            status, reply = invoke(url, key, texts, endpoint)
            took = time.monotonic() - start
            with lock:
                result.requests += 1
                if status != 200 or not reply.get("success"):
                    result.failed += 1
                    result.errors.append(f"{status}: {reply.get('error')}")
                    continue
                out = reply["outputs"]["extractions"]
                result.texts += len(out["results"])
                result.latencies.append(took)
                result.generation.append(out["seconds"])
                result.bookkeeping.append(reply["execution_time"] - out["seconds"])
                result.models[out["model"]] = result.models.get(out["model"], 0) + 1
                result.answers.update((r["text"], r["answer"]) for r in out["results"])

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.monotonic()
    for t in threads:
        t.start()
    if during:
        during()
    for t in threads:
        t.join()
    result.seconds = time.monotonic() - start
    return result


def peak_rss_mb(pid: int | None) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (OSError, TypeError):
        return None
    return next(int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM"))


def test_inputs(config) -> list[str]:
    from tuneline.data.formats import to_messages
    from tuneline.data.sources import load_splits

    return [to_messages(row, config.data)[-2]["content"] for row in load_splits(config.data)["test"]]


def switcher(model_name: str, version: str, after_s: float):
    """Promote `version` to production `after_s` into the run (as the promote step does); returns the undo."""
    from zenml.client import Client
    from zenml.enums import ModelStages

    client = Client()
    before = client.get_model_version(model_name, ModelStages.PRODUCTION).name

    def during() -> None:
        time.sleep(after_s)
        client.update_model_version(model_name, version, stage=ModelStages.PRODUCTION, force=True)
        print(f"promoted {model_name} version {version} to production at {after_s:.0f} s", file=sys.stderr)

    def undo() -> None:
        client.update_model_version(model_name, before, stage=ModelStages.PRODUCTION, force=True)

    return during, undo


def render(rows: list[dict], peak: float | None) -> str:
    head = (
        f"{'mode':<26}{'texts/req':>9}{'requests':>9}{'failed':>7}{'req/s':>8}{'texts/s':>9}{'p50 s':>7}"
        f"{'p95 s':>7}{'p99 s':>7}{'gen p50':>8}{'zenml p50':>10}"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['mode']:<26}{r['texts/req']:>9}{r['requests']:>9}{r['failed']:>7}{r['req/s']:>8.2f}"
            f"{r['texts/s']:>9.2f}{r['p50 s']:>7.2f}{r['p95 s']:>7.2f}{r['p99 s']:>7.2f}"
            f"{r['gen p50 s']:>8.2f}{r['zenml p50 s']:>10.2f}"
        )
    one, batched = rows[0], rows[1]
    lines.append(
        f"\nbatched/one-text texts/s: {batched['texts/s'] / one['texts/s']:.2f}x   "
        f"failed requests: {sum(r['failed'] for r in rows)}   ZenML bookkeeping at p50 (one text): "
        f"{one['zenml p50 s']:.2f} s = {one['zenml p50 s'] / one['p50 s']:.0%} of the latency   "
        + (f"server peak RSS: {peak:.0f} MB" if peak else "server peak RSS: unknown (--url)")
    )
    for r in rows:
        lines.append(
            f"{r['mode']}: answered by {r['models']}" + (f"; first errors {r['errors']}" if r["errors"] else "")
        )
    return "\n".join(lines)


def side_by_side(off: list[ModeResult], on: list[ModeResult], clients: int) -> str:
    """Each mode with batching off and on; `same answers`: every text answered in both runs got one answer."""
    lines = [
        f"\n{'at ' + str(clients) + ' clients':<26}{'':>4}{'texts/s':>17}{'p50 s':>17}{'failed':>13}"
        f"{'same answers':>14}",
        f"{'':<30}{'off':>8}{'on':>9}{'off':>8}{'on':>9}{'off':>6}{'on':>7}",
    ]
    for a, b in zip(off, on):
        ra, rb = a.row(), b.row()
        same, shared = same_answers(a, b)
        faster, quicker = rb["texts/s"] / max(ra["texts/s"], 1e-9), rb["p50 s"] / max(ra["p50 s"], 1e-9)
        lines.append(
            f"{a.mode.removesuffix(', batching off'):<30}{ra['texts/s']:>8.2f}{rb['texts/s']:>9.2f}"
            f"{ra['p50 s']:>8.2f}{rb['p50 s']:>9.2f}{ra['failed']:>6}{rb['failed']:>7}"
            f"{f'{same}/{shared}':>14}   on/off: texts/s {faster:.1f}x, p50 {quicker:.2f}x"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/finetune.yaml")
    p.add_argument("--model-version", default="production")
    p.add_argument("--url", help="a running deployment (skips deploying)")
    p.add_argument("--key")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=60, help="per mode and setup")
    p.add_argument("--batch", type=int, default=16, help="texts per request in the batched mode")
    p.add_argument(
        "--batching",
        choices=["both", "on", "off"],
        default="both",
        help="batching across requests: deploy with it off and on and compare (both), or one of them",
    )
    p.add_argument("--switch-to", metavar="VERSION", help="also run across a promotion of this version")
    p.add_argument("--record-cost", action="store_true", help="also compare serving.record off and full")
    p.add_argument(
        "--compare",
        type=axes,
        metavar="AXES",
        help="only one-text requests, one deployment per setup of these axes: batching, recording or both",
    )
    p.add_argument(
        "--endpoint",
        choices=("invoke", "openai"),
        default="invoke",
        help="with --compare: ZenML's /invoke (a pipeline run per request) or /v1/chat/completions (none)",
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.compare and (args.url or args.switch_to):
        p.error("--compare deploys each setup itself: it goes without --url and --switch-to")

    config, zenml_config = load_run_config(args.config)
    inputs = test_inputs(config)
    try:
        return measure(args, config, zenml_config, inputs)
    finally:
        if not args.url:  # what it deployed does not keep the cores busy after the table is printed
            from runner import serve

            try:
                print(f"stopped deployment {serve.stop(config, zenml_config)}", file=sys.stderr)
            except serve.DeployFailed:
                pass  # nothing was deployed: the error that ended the run is the news


def measure(args, config, zenml_config, inputs: list[str]) -> int:
    if args.compare:
        results = compare(args, config, zenml_config, inputs, args.compare)
        print(json.dumps(compare_rows(results), indent=1) if args.json else compare_table(results, args.clients))
        return 0
    settings = [None] if args.url else {"both": ["off", "on"], "on": ["on"], "off": ["off"]}[args.batching]
    runs: dict[str | None, list[ModeResult]] = {}
    for batching in settings:
        setup = Setup(batching, config.serving.record) if batching else None
        url, key, pid = deploy(args, config, zenml_config, setup)
        invoke(url, key, inputs[:1])  # warm-up: the first request pays for lazy imports
        suffix = f", batching {batching}" if batching else ""
        runs[batching] = [
            drive(url, key, inputs, "one text per request" + suffix, 1, args.clients, args.seconds),
            drive(url, key, inputs, f"batches of {args.batch}" + suffix, args.batch, args.clients, args.seconds),
        ]
    rows = [r.row() for results in runs.values() for r in results]
    if args.switch_to:
        from runner.versions import model_name_of

        during, undo = switcher(model_name_of(config, zenml_config), args.switch_to, args.seconds / 3)
        try:
            rows.append(
                drive(
                    url, key, inputs, f"one text, switch to v{args.switch_to}", 1, args.clients, args.seconds, during
                ).row()
            )
        finally:
            undo()
    peak = peak_rss_mb(pid)
    print(json.dumps({"rows": rows, "server_peak_rss_mb": peak}, indent=1) if args.json else render(rows, peak))
    if not args.json and {"off", "on"} <= runs.keys():
        print(side_by_side(runs["off"], runs["on"], args.clients))
    if args.record_cost:
        print(compare_table(compare(args, config, zenml_config, inputs, ["recording"]), args.clients))
    return 0


def compare(args, config, zenml_config, inputs: list[str], compared: list[str]) -> dict[Setup, ModeResult]:
    """One-text requests at `--clients` on a fresh deployment of each setup."""
    results = {}
    for setup in setups(compared, config.serving.record):
        url, key, _ = deploy(args, config, zenml_config, setup)
        invoke(url, key, inputs[:1], args.endpoint)
        results[setup] = drive(url, key, inputs, str(setup), 1, args.clients, args.seconds, endpoint=args.endpoint)
    return results


def same_answers(a: ModeResult, b: ModeResult) -> tuple[int, int]:
    """Of the texts both runs answered, how many got the same answer."""
    shared = a.answers.keys() & b.answers.keys()
    return sum(a.answers[t] == b.answers[t] for t in shared), len(shared)


def compare_rows(results: dict[Setup, ModeResult]) -> list[dict]:
    first = next(iter(results.values()))
    return [
        {"batching": s.batching, "record": s.record} | r.row() | dict(zip(("same", "shared"), same_answers(first, r)))
        for s, r in results.items()
    ]


def compare_table(results: dict[Setup, ModeResult], clients: int) -> str:
    """The setups' rows; then each pair that differs in batching alone, or in recording alone."""
    rows = compare_rows(results)
    lines = [
        f"\none text per request at {clients} clients",
        f"{'setup':<28}{'requests':>9}{'failed':>7}{'texts/s':>9}{'p50 s':>8}{'p95 s':>8}{'same answers':>14}",
    ]
    for s, r in zip(results, rows):
        same = f"{r['same']}/{r['shared']}"
        lines.append(
            f"{str(s):<28}{r['requests']:>9}{r['failed']:>7}{r['texts/s']:>9.2f}{r['p50 s']:>8.3f}"
            f"{r['p95 s']:>8.3f}{same:>14}"
        )
    by, costs = {(r["batching"], r["record"]): r for r in rows}, []
    for (batching, record), r in by.items():
        if batching == "on" and (off := by.get(("off", record))):
            lines.append(
                f"batching on/off (record {record}): texts/s {r['texts/s'] / max(off['texts/s'], 1e-9):.2f}x, "
                f"p50 {r['p50 s'] / max(off['p50 s'], 1e-9):.2f}x"
            )
        if record != "off" and (bare := by.get((batching, "off"))):
            cost = r["p50 s"] / max(bare["p50 s"], 1e-9) - 1
            verdict = "under" if cost < RECORDING_TARGET else "OVER"
            costs.append(
                f"recording {record} vs off (batching {batching}): p50 {r['p50 s']:.3f} s vs {bare['p50 s']:.3f} s, "
                f"{cost:+.1%} ({verdict} the {RECORDING_TARGET:.0%} target)"
            )
    agree = all(r["same"] == r["shared"] for r in rows)
    lines += costs
    lines.append(f"answers identical across setups: {'yes' if agree else 'NO'} (on the texts both answered)")
    return "\n".join(lines)


def deploy(args, config, zenml_config, setup: Setup | None) -> tuple[str, str | None, int | None]:
    """`--url`, or the config's model deployed as `setup` says."""
    if setup is None:
        return args.url, args.key, None
    from runner import serve

    deployment = serve.serve(setup.configure(config), zenml_config, args.model_version)
    print(f"{setup}: " + serve.describe(deployment), file=sys.stderr)
    return deployment.url, deployment.auth_key, deployment.deployment_metadata.get("pid")


if __name__ == "__main__":
    sys.exit(main())
