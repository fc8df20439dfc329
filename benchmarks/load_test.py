"""Load test of `hub serve`: many concurrent HTTP requests across 16 shipped tasks of every kind.

Starts `hub serve` in its own process, asks every distinct input once at concurrency 1 (the
single-request answers), then fires --requests random (task, input) requests at --concurrency, and
checks: no errors, every answer equal to the single-request answer for its input (labels, tags and
spans exactly, scores within 1e-4), the server's resident memory after the run within 10% of before
(both read once the server has been idle long enough to hand freed memory back: `--idle-release-s`).
The RSS is also sampled during the load, to show whether it keeps growing while busy.

    python benchmarks/load_test.py                      # 10,000 requests at concurrency 64
    python benchmarks/load_test.py --requests 2000      # a shorter run
    python benchmarks/load_test.py --allocator /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 --out benchmarks/results/load_test_jemalloc
                                                        # the server on another malloc (LD_PRELOAD), e.g. jemalloc
    python benchmarks/load_test.py --adversarial        # the same small requests while large QA requests stream in
    python benchmarks/load_test.py --adversarial --server-checkout /tmp/before --out benchmarks/results/load_test_adversarial_before
                                                        # the server from another checkout (e.g. `git worktree add /tmp/before REV`)

`--adversarial`: every `--large-every` seconds one large extractive-QA request joins the small ones,
alternating a context of ~`--large-chars` characters (under the server's windows-per-item limit) and
one of ~`--huge-chars` (over it: refused with 413 by a server that bounds work, run for minutes by one
that does not). The small requests' latency percentiles are the measure of fairness.

Inputs are dev examples of each task (../shared/data and the embedded corpora). Writes
benchmarks/results/load_test.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from tqdm.auto import tqdm

import hub
from hub.atomic import atomic_file
from hub.data import load_split
from hub.registry import load_registry
from hub.service import Hub

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = ["sst2", "cola", "mrpc", "stsb", "rte", "bbc_news", "conll2003", "conll2003_spans", "xquad_en", "semeval2010",
         "tnews", "afqmc", "sentiment_zh", "cluener", "msra_ner", "cws_zh"]


def task_inputs(registry_path: Path, tasks: list[str], per_task: int, seed: int) -> list[tuple[str, Any]]:
    """`per_task` dev inputs of each task, as JSON request inputs."""
    registry = load_registry(registry_path)
    served = Hub(registry)
    inputs = []
    for task in tqdm(tasks, desc="dev inputs", unit="task"):
        codec = served.runtime(task).examples
        rows = load_split(registry, registry.task(task), "dev")
        picked = random.Random(seed).sample(range(len(rows)), min(per_task, len(rows)))
        for i in picked:
            value = codec.request(rows[i])
            if isinstance(value, tuple):
                value = value[0] if len(value) == 1 else list(value)  # JSON: one text is a string, a pair a list
            inputs.append((task, value))
    return inputs


def same_answer(a: Any, b: Any, tolerance: float = 1e-4) -> bool:
    """Equal, with floats within `tolerance` (batched and single passes pad differently)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= tolerance
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_answer(a[k], b[k], tolerance) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same_answer(x, y, tolerance) for x, y in zip(a, b))
    return a == b


def score_gap(a: Any, b: Any) -> float | None:
    """The largest difference between the floats of two answers whose other parts (labels, tags, spans, texts)
    are equal; None when those differ (a different answer, not float noise)."""
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None
    if isinstance(a, dict) or isinstance(a, list):
        if type(a) is not type(b) or len(a) != len(b) or (isinstance(a, dict) and a.keys() != b.keys()):
            return None
        pairs = [(a[k], b[k]) for k in a] if isinstance(a, dict) else list(zip(a, b))
        gaps = [score_gap(x, y) for x, y in pairs]
        return None if None in gaps else max(gaps, default=0.0)
    return 0.0 if a == b else None


def mismatch_summary(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    """How answers that failed `same_answer` differ: in scores only (and by how much), or in what they say."""
    gaps = [score_gap(a, b) for a, b in pairs]
    scores_only = [g for g in gaps if g is not None]
    return {"different_answers": len(gaps) - len(scores_only), "scores_only": len(scores_only),
            "largest_score_gap": max(scores_only, default=0.0)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


IDLE_RELEASE_S = 1.0  # `hub serve --idle-release-s` (its default)
IDLE_SETTLE_S = IDLE_RELEASE_S + 1.5  # how long the RSS readings wait for the server to go idle and release


def start_server(registry: Path, tasks: list[str], port: int, allocator: Path | None = None,
                 checkout: Path | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "hub", "serve", "--registry", str(registry), "--port", str(port), "--no-access-log",
               "--idle-release-s", str(IDLE_RELEASE_S),
               *[part for task in tasks for part in ("--preload", task)]]
    env = dict(os.environ)
    if allocator:
        env["LD_PRELOAD"] = str(allocator)  # the server's malloc only, not this client's
    # `python -m hub` run in another checkout imports that checkout's `hub` (the current folder comes first)
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                              cwd=checkout.resolve() if checkout else None)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"`hub serve` exited: {server.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json().get("status") == "ok":
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.kill()
    raise SystemExit("`hub serve` did not answer /health within 5 minutes")


async def fire(url: str, requests: list[tuple[str, Any]], concurrency: int, desc: str,
               timeout: float = 120) -> list[tuple[int, Any, float]]:
    """POST every request with at most `concurrency` in flight: (status, body, seconds) in order."""
    limit = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(requests), desc=desc, unit="req")
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        async def one(task: str, value: Any) -> tuple[int, Any, float]:
            async with limit:
                started = time.perf_counter()
                try:
                    response = await client.post("/v1/run", json={"task": task, "input": value})
                    answer = (response.status_code, response.json(), time.perf_counter() - started)
                except (httpx.HTTPError, ValueError) as exc:
                    answer = (0, {"error": repr(exc)}, time.perf_counter() - started)
                bar.update()
                return answer
        answers = await asyncio.gather(*(one(t, v) for t, v in requests))
    bar.close()
    return answers


class RssSampler:
    """The process's resident memory every `every` seconds, in a background thread, while in a `with` block."""

    def __init__(self, process: psutil.Process, every: float = 0.5):
        self.process, self.every = process, every
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(self.process.memory_info().rss)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def large_requests(registry_path: Path, chars: list[int]) -> list[tuple[str, Any]]:
    """xquad_en questions whose context is dev contexts joined up to each of `chars` characters."""
    registry = load_registry(registry_path)
    rows = load_split(registry, registry.task("xquad_en"), "dev")
    contexts = list(dict.fromkeys(row["context"] for row in rows))
    out = []
    for i, size in enumerate(chars):
        text, k = [], i
        while sum(map(len, text)) < size:
            text.append(contexts[k % len(contexts)])
            k += 1
        out.append(("xquad_en", {"question": rows[i]["question"], "context": " ".join(text)[:size]}))
    return out


async def fire_with_large(url: str, small: list[tuple[str, Any]], large: list[tuple[str, Any]], concurrency: int,
                          every: float) -> tuple[list[tuple[int, Any, float]], list[tuple[int, Any, float]]]:
    """The small requests at `concurrency`, while one large request starts every `every` seconds (each on its
    own connection, not counted against the small ones' concurrency) until the small ones are done."""
    done = asyncio.Event()
    answers: list[tuple[int, Any, float]] = []

    async def stream_large() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=600) as client:
            async def one(value: Any) -> None:
                started = time.perf_counter()
                try:
                    response = await client.post("/v1/run", json={"task": "xquad_en", "input": value})
                    answers.append((response.status_code, response.json().get("error", {}).get("type"), time.perf_counter() - started))
                except (httpx.HTTPError, ValueError) as exc:
                    answers.append((0, repr(exc), time.perf_counter() - started))
            pending, i = [], 0
            while not done.is_set():
                pending.append(asyncio.create_task(one(large[i % len(large)][1])))
                i += 1
                try:
                    await asyncio.wait_for(done.wait(), every)
                except asyncio.TimeoutError:
                    pass
            for task in pending:
                task.cancel()  # what the server still works on after the small ones are done is not measured
            await asyncio.gather(*pending, return_exceptions=True)

    streamer = asyncio.create_task(stream_large())
    await asyncio.sleep(0.5)  # the first large request is in before the small ones start
    small_answers = await fire(url, small, concurrency, f"small requests (concurrency {concurrency}) beside large ones")
    done.set()
    await streamer
    return small_answers, answers


def run_adversarial(args: argparse.Namespace) -> dict[str, Any]:
    """Small dev requests while large QA requests stream in: their latency, errors and answers."""
    inputs = task_inputs(args.registry, args.tasks, args.per_task, args.seed)
    large = large_requests(args.registry, [args.large_chars, args.huge_chars])
    rng = random.Random(args.seed)
    picks = [rng.randrange(len(inputs)) for _ in range(args.requests)]
    port = free_port()
    server = start_server(args.registry, args.tasks, port, args.allocator, args.server_checkout)
    url = f"http://127.0.0.1:{port}"
    try:
        process = psutil.Process(server.pid)
        single = asyncio.run(fire(url, inputs, 1, "single requests (concurrency 1)"))
        asyncio.run(fire(url, [inputs[i] for i in picks[: args.warmup]], args.concurrency, "warm-up"))
        quiet = asyncio.run(fire(url, [inputs[i] for i in picks], args.concurrency, "small requests alone"))
        with RssSampler(process) as busy:
            small, big = asyncio.run(fire_with_large(url, [inputs[i] for i in picks], large, args.concurrency, args.large_every))
    finally:
        server.terminate()
        server.wait(30)

    def percentiles(answers: list[tuple[int, Any, float]]) -> dict[str, float]:
        times = sorted(t for _, _, t in answers)
        return {q: 1000 * times[min(len(times) - 1, int(p * len(times)))] for q, p in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))}

    wrong = [j for j, (i, (status, body, _)) in enumerate(zip(picks, small))
             if status == 200 and not same_answer(body["result"], single[i][1]["result"])]
    large_statuses: dict[str, int] = {}
    for status, kind, _ in big:
        key = f"{status} {kind}" if kind else str(status)
        large_statuses[key] = large_statuses.get(key, 0) + 1
    return {
        "command": " ".join(["python benchmarks/load_test.py", *sys.argv[1:]]),
        "server": _describe_checkout(args.server_checkout),
        "requests": args.requests, "concurrency": args.concurrency, "large_every_s": args.large_every,
        "large_chars": [args.large_chars, args.huge_chars],
        "small_alone_latency_ms": percentiles(quiet), "small_latency_ms": percentiles(small),
        "small_errors": sum(1 for status, _, _ in small if status != 200), "small_mismatches": len(wrong),
        "mismatch_examples": [{"input": inputs[picks[j]], "single": single[picks[j]][1]["result"],
                               "beside_large": small[j][1]["result"]} for j in wrong[:5]],
        "mismatch_kinds": mismatch_summary([(single[picks[j]][1]["result"], small[j][1]["result"]) for j in wrong]),
        "large_sent": len(big), "large_statuses": large_statuses,
        "large_latency_ms": percentiles(big) if big else {}, "rss_busy_max_mb": max(busy.samples, default=0) / 1e6,
    }


def _describe_checkout(checkout: Path | None) -> str:
    """'this checkout', or the other checkout's commit (what a reader needs to rerun it)."""
    if checkout is None:
        return "this checkout"
    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return f"the checkout of commit {commit.stdout.strip() or '?'}"


def report_adversarial(result: dict[str, Any], out: Path) -> str:
    alone, mixed = result["small_alone_latency_ms"], result["small_latency_ms"]
    lines = [
        f"# Fairness: {result['requests']:,} small requests at concurrency {result['concurrency']}, large QA requests beside them",
        "",
        f"`{result['command']}` — server: {result['server']}; one large xquad_en request every {result['large_every_s']:g} s, "
        f"contexts alternating {result['large_chars'][0]:,} and {result['large_chars'][1]:,} characters.",
        "",
        "| small requests | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|",
        f"| alone | {alone['p50']:.0f} | {alone['p95']:.0f} | {alone['p99']:.0f} |",
        f"| beside the large ones | {mixed['p50']:.0f} | {mixed['p95']:.0f} | {mixed['p99']:.0f} |",
        "",
        f"Small requests: {result['small_errors']} errors, {result['small_mismatches']} answers different from the single-request "
        f"answer beyond 1e-4 ({_kinds(result['mismatch_kinds'])}). Large requests sent: {result['large_sent']}, answers {result['large_statuses']} (0: no answer before the small "
        f"requests were done or the client gave up). Server RSS while busy: at most {result['rss_busy_max_mb']:.0f} MB.",
    ]
    text = "\n".join(lines) + "\n"
    with atomic_file(out.with_suffix(".md")) as staging:
        staging.write_text(text, encoding="utf-8")
    with atomic_file(out.with_suffix(".json")) as staging:
        staging.write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    return text


def idle_rss(process: psutil.Process) -> float:
    """RSS once the server has had time to go idle and hand freed memory back."""
    time.sleep(IDLE_SETTLE_S)
    return process.memory_info().rss


def run(args: argparse.Namespace) -> dict[str, Any]:
    inputs = task_inputs(args.registry, args.tasks, args.per_task, args.seed)
    rng = random.Random(args.seed)
    picks = [rng.randrange(len(inputs)) for _ in range(args.requests)]
    port = free_port()
    server = start_server(args.registry, args.tasks, port, args.allocator)
    url = f"http://127.0.0.1:{port}"
    try:
        process = psutil.Process(server.pid)
        single = asyncio.run(fire(url, inputs, 1, "single requests (concurrency 1)"))
        failed = [(inputs[i], s) for i, s in enumerate(single) if s[0] != 200]
        if failed:
            raise SystemExit(f"{len(failed)} single requests failed, e.g. {failed[0]}")
        warm = [inputs[i] for i in random.Random(args.seed + 1).choices(range(len(inputs)), k=args.warmup)]
        asyncio.run(fire(url, warm, args.concurrency, "warm-up"))  # the allocator reaches its working size first
        before = idle_rss(process)
        started = time.perf_counter()
        with RssSampler(process) as busy:
            answers = asyncio.run(fire(url, [inputs[i] for i in picks], args.concurrency, f"load (concurrency {args.concurrency})"))
        seconds = time.perf_counter() - started
        after = idle_rss(process)
        metrics = httpx.get(url + "/metrics").text
    finally:
        server.terminate()
        server.wait(30)
    statuses: dict[str, int] = {}
    for status, _, _ in answers:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    mismatched = [j for j, (i, (status, body, _)) in enumerate(zip(picks, answers))
                  if status == 200 and not same_answer(body["result"], single[i][1]["result"])]
    mismatches = [picks[j] for j in mismatched]
    latencies = sorted(s for _, _, s in answers)
    sample = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines() if line.startswith("hub_batch_items_")}
    batch_sum, batch_count = sample["hub_batch_items_sum"], sample["hub_batch_items_count"]
    quarter = max(1, len(busy.samples) // 4)
    return {
        "command": " ".join(["python benchmarks/load_test.py", *sys.argv[1:]]),
        "allocator": str(args.allocator) if args.allocator else "glibc malloc",
        "tasks": args.tasks, "distinct_inputs": len(inputs), "requests": args.requests, "concurrency": args.concurrency,
        "statuses": statuses, "errors": args.requests - statuses.get("200", 0), "mismatches": len(mismatches),
        "mismatch_examples": [inputs[i] for i in mismatches[:5]],
        "mismatch_kinds": mismatch_summary([(single[picks[j]][1]["result"], answers[j][1]["result"]) for j in mismatched]),
        "seconds": seconds, "requests_per_second": args.requests / seconds,
        "latency_ms": {q: 1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))] for q, p in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))},
        "mean_batch_items": batch_sum / batch_count, "warmup": args.warmup, "rss_before_mb": before / 1e6, "rss_after_mb": after / 1e6,
        "rss_growth": after / before - 1, "rss_busy_max_mb": max(busy.samples) / 1e6,
        "rss_busy_first_quarter_max_mb": max(busy.samples[:quarter]) / 1e6, "rss_busy_last_quarter_max_mb": max(busy.samples[-quarter:]) / 1e6,
        "idle_release_s": IDLE_RELEASE_S,
    }


def _kinds(kinds: dict[str, Any]) -> str:
    return (f"{kinds['scores_only']} in scores only, by at most {kinds['largest_score_gap']:.1e}; "
            f"{kinds['different_answers']} in labels, tags, spans or text")


def report(result: dict[str, Any], out: Path) -> str:
    ok = result["errors"] == 0 and result["mismatches"] == 0 and abs(result["rss_growth"]) <= 0.10
    latency = result["latency_ms"]
    lines = [
        f"# Load test: {result['requests']:,} HTTP requests at concurrency {result['concurrency']} across {len(result['tasks'])} tasks",
        "",
        f"`{result['command']}` — `hub serve` in its own process (malloc: {result['allocator']}); {result['distinct_inputs']} distinct dev inputs "
        f"({', '.join(result['tasks'])}), each request a random one of them.",
        "",
        "| check | wanted | measured |",
        "|---|---|---|",
        f"| errors (non-200 answers) | 0 | {result['errors']} (statuses: {result['statuses']}) |",
        f"| answers different from the single-request answer (scores within 1e-4) | 0 | {result['mismatches']} "
        f"({_kinds(result['mismatch_kinds'])}) |",
        f"| answers with another label, tag sequence, span or answer text than the single-request one | 0 | "
        f"{result['mismatch_kinds']['different_answers']} |",
        f"| server RSS after / before the run (before: after {result['warmup']:,} warm-up requests; both once idle for "
        f"{IDLE_SETTLE_S:g} s) | within 10% | {result['rss_after_mb']:.0f} / {result['rss_before_mb']:.0f} MB ({result['rss_growth']:+.1%}) |",
        "",
        f"While busy the RSS holds the heap's working size: at most {result['rss_busy_first_quarter_max_mb']:.0f} MB in the first quarter "
        f"of the run, {result['rss_busy_last_quarter_max_mb']:.0f} MB in the last (sampled every 0.5 s); after {result['idle_release_s']:g} s "
        "without requests the server calls glibc's `malloc_trim` (`hub serve --idle-release-s`; another allocator returns freed pages its own way).",
        "",
        f"Throughput {result['requests_per_second']:.1f} requests/s; latency p50 {latency['p50']:.0f} ms, p95 {latency['p95']:.0f} ms, "
        f"p99 {latency['p99']:.0f} ms; {result['mean_batch_items']:.1f} items per batch on average (the batch metrics count the warm-up too). "
        f"All checks {'passed' if ok else 'did NOT pass'}.",
    ]
    text = "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(text, encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--per-task", type=int, default=32, help="distinct dev inputs per task")
    parser.add_argument("--warmup", type=int, default=1000, help="requests at full concurrency before memory is first measured")
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--registry", type=Path, default=hub.default_registry_path())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--allocator", type=Path, help="a malloc library the server runs on (LD_PRELOAD), e.g. libjemalloc.so.2")
    parser.add_argument("--out", type=Path, help="results file stem (default: results/load_test or load_test_adversarial)")
    parser.add_argument("--adversarial", action="store_true", help="small requests while large QA requests stream in")
    parser.add_argument("--large-every", type=float, default=5.0, help="seconds between large requests (--adversarial)")
    parser.add_argument("--large-chars", type=int, default=40_000, help="context size of the allowed large requests")
    parser.add_argument("--huge-chars", type=int, default=100_000, help="context size of the oversize requests")
    parser.add_argument("--server-checkout", type=Path, help="serve with the `hub` package of this checkout")
    args = parser.parse_args()
    if args.out is None:
        args.out = RESULTS / ("load_test_adversarial" if args.adversarial else "load_test")
    if args.allocator and not args.allocator.is_file():
        parser.error(f"--allocator {args.allocator}: no such file (Debian/Ubuntu: apt install libjemalloc2)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(report_adversarial(run_adversarial(args), args.out) if args.adversarial else report(run(args), args.out))


if __name__ == "__main__":
    main()
