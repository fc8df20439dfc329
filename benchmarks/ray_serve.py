"""Ray Serve against `hub serve` on this machine: throughput, latency, batching and routing affinity.

Three servers answer the same random mixed-task load (dev inputs of --tasks, as benchmarks/load_test.py draws them)
one after another: `hub serve` alone (one process, its dynamic batcher), then the hub's Ray Serve app
(hub/ray_serve.py) with 1 and with 2 HubReplica replicas on a local Ray cluster (127.0.0.1). Every answer is checked
against `hub serve`'s single-request answer for its input. Per server: requests per second, latency percentiles,
items per batch round (how much mixed-task batching survived), and for Ray the share of requests whose task was
already loaded on the replica that got it.

    python benchmarks/ray_serve.py                       # 3,000 requests at concurrency 32
    python benchmarks/ray_serve.py --requests 500        # a shorter run

On a 2-core machine the replicas, Serve's proxy and ingress, and this client share two cores: a second replica
cannot add compute here, and the numbers show Serve's per-request overhead and whether batching survives, not
scaling. Writes benchmarks/results/ray_serve.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import httpx  # noqa: E402
from load_test import fire, free_port, same_answer, start_server, task_inputs  # noqa: E402

from hub.atomic import atomic_file  # noqa: E402
from hub.bench.report import machine  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TASKS = ["sst2", "mrpc", "stsb", "conll2003", "xquad_en", "semeval2010", "tnews", "afqmc", "cluener", "cws_zh"]


def measure(name: str, url: str, inputs: list[tuple[str, Any]], picks: list[int], reference: list[Any] | None,
            args: argparse.Namespace) -> tuple[dict[str, Any], list[Any]]:
    """Single answers (concurrency 1), a warm-up, then the load; the row of the table and the single answers."""
    single = asyncio.run(fire(url, inputs, 1, f"{name}: single requests"))
    asyncio.run(fire(url, [inputs[i] for i in picks[: args.warmup]], args.concurrency, f"{name}: warm-up"))
    before = _counters(url)
    started = time.perf_counter()
    answers = asyncio.run(fire(url, [inputs[i] for i in picks], args.concurrency, f"{name}: load"))
    seconds = time.perf_counter() - started
    after = _counters(url)
    truth = reference if reference is not None else [body.get("result") for _, body, _ in single]
    statuses: dict[str, int] = {}
    for status, _, _ in answers:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    mismatches = sum(1 for i, (status, body, _) in zip(picks, answers)
                     if status == 200 and not same_answer(body["result"], truth[i]))
    latencies = sorted(s for _, _, s in answers)
    rounds, items = after["rounds"] - before["rounds"], after["items"] - before["items"]
    row = {"server": name, "requests": len(picks), "statuses": statuses, "mismatches": mismatches,
           "requests_per_second": len(picks) / seconds,
           "latency_ms": {q: 1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))]
                          for q, p in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))},
           "items_per_round": items / rounds if rounds else None,
           "mixed_round_share": ((after["mixed_rounds"] - before["mixed_rounds"]) / rounds
                                 if rounds and "mixed_rounds" in after else None)}
    if "hits" in after:
        hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
        row["affinity_hit_rate"] = hits / (hits + misses) if hits + misses else None
        row["replica_items"] = after["replica_items"]
    return row, [body.get("result") for _, body, _ in single]


def _counters(url: str) -> dict[str, Any]:
    """Rounds and items the server has run so far (its /metrics for `hub serve`, its /health for Ray)."""
    health = httpx.get(url + "/health", timeout=30).json()
    if health.get("backend") == "ray_serve":
        replicas = health["replicas"].values()
        return {"rounds": sum(r["rounds"] for r in replicas), "items": sum(r["items"] for r in replicas),
                "mixed_rounds": sum(r["mixed_rounds"] for r in replicas), "hits": health["routing"]["hits"],
                "misses": health["routing"]["misses"],
                "replica_items": sorted(r["items"] for r in replicas)}
    lines = httpx.get(url + "/metrics", timeout=30).text.splitlines()
    sample = {line.split()[0]: float(line.split()[1]) for line in lines
              if line.startswith(("hub_batch_items_", "hub_batch_tasks_"))}
    rounds = sample.get("hub_batch_items_count", 0.0)
    return {"rounds": rounds, "items": sample.get("hub_batch_items_sum", 0.0),
            "mixed_rounds": rounds - sample.get('hub_batch_tasks_bucket{le="1.0"}', 0.0)}


def ray_app(registry: Path, replicas: int, port: int, tasks: list[str]) -> str:
    """The hub's Serve app with `replicas` replicas (tasks loaded by the single requests); its URL. Each replica
    reserves its share of the cores: Ray sets an actor's OMP_NUM_THREADS (torch's threads) to its num_cpus."""
    from ray import serve

    from hub.ray_serve import APP_NAME, build_app

    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({"registry": str(registry), "replicas": replicas, "tasks_per_replica": len(tasks),
                         "num_cpus": max(1, (os.cpu_count() or 1) // replicas)}), name=APP_NAME, route_prefix="/")
    return f"http://127.0.0.1:{port}"


def report(rows: list[dict[str, Any]], args: argparse.Namespace, out: Path) -> str:
    command = " ".join(["python benchmarks/ray_serve.py", *sys.argv[1:]])
    lines = ["# Ray Serve against `hub serve`", "",
             f"`{command}` on {machine()}: {args.requests:,} random requests over {len(args.tasks)} shipped tasks "
             f"({', '.join(args.tasks)}) at concurrency {args.concurrency}, after {args.warmup} warm-up requests; "
             "every answer checked against `hub serve`'s single-request answer.", "",
             "| server | requests/s | p50 ms | p95 ms | p99 ms | items per batch round | rounds mixing tasks | "
             "affinity hits | errors | mismatches |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        errors = row["requests"] - row["statuses"].get("200", 0)
        share = row.get("mixed_round_share")
        hit_rate = row.get("affinity_hit_rate")
        lines.append(f"| {row['server']} | {row['requests_per_second']:.1f} | {row['latency_ms']['p50']:.0f} | "
                     f"{row['latency_ms']['p95']:.0f} | {row['latency_ms']['p99']:.0f} | "
                     f"{row['items_per_round']:.1f} | {'-' if share is None else f'{share:.0%}'} | "
                     f"{'-' if hit_rate is None else f'{hit_rate:.0%}'} | {errors} | {row['mismatches']} |")
    lines += ["", f"Cores here: {os.cpu_count()}. With 2 cores, the replicas, Serve's proxy and ingress and this "
              "client share them, so a second replica cannot add compute: the table shows Serve's overhead per request "
              "and that batching survives on each replica, not scaling (that needs a replica per machine or per GPU)."]
    text = "\n".join(lines) + "\n"
    with atomic_file(out.with_suffix(".md")) as path:
        path.write_text(text, encoding="utf-8")
    with atomic_file(out.with_suffix(".json")) as path:
        path.write_text(json.dumps({"command": command, "machine": machine(), "rows": rows}, indent=2),
                        encoding="utf-8")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registry", type=Path, default=ROOT / "registry.yaml")
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--per-task", type=int, default=20)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "ray_serve")
    args = parser.parse_args()
    inputs = task_inputs(args.registry, args.tasks, args.per_task, args.seed)
    rng = random.Random(args.seed)
    picks = [rng.randrange(len(inputs)) for _ in range(args.requests)]
    rows = []
    port = free_port()
    server = start_server(args.registry, args.tasks, port)
    try:
        row, reference = measure("hub serve", f"http://127.0.0.1:{port}", inputs, picks, None, args)
        rows.append(row)
    finally:
        server.terminate()
        server.wait(30)
    import ray
    from ray import serve

    # the cores, plus room for the ingress's quarter CPU (a reservation, not a core)
    ray.init(address="local", num_cpus=(os.cpu_count() or 1) + 1, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    try:
        for replicas in args.replicas:
            url = ray_app(args.registry, replicas, free_port(), args.tasks)
            rows.append(measure(f"Ray Serve, {replicas} replica{'s' * (replicas > 1)}", url, inputs, picks, reference,
                                args)[0])
            serve.shutdown()
    finally:
        ray.shutdown()
    print(report(rows, args, args.out))


if __name__ == "__main__":
    main()
