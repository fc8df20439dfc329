"""The Ray Serve routing policy at a scale this machine cannot serve: many tasks, Zipf traffic, 8-64 replicas.

Each replica keeps at most C tasks loaded (an LRU, as HubReplica's `tasks_per_replica`); a request whose task the
chosen replica lacks is a load (disk or network read, then the task's first pass). Policies:

- `random`: any replica, uniformly (what a plain load balancer does; every replica sees every task).
- `affinity`: Serve's model multiplexing as hub/ray_serve.py uses it: among the replicas that hold the task, the
  less loaded of two picked at random; when none holds it, or the holders are over `--overload` times the mean load,
  the less loaded of two replicas picked at random (which then loads it: hot tasks spread over several replicas).
- `hash`: the task's hash picks its replica (no load balancing at all): the best hit rate a static split gets, and
  the imbalance it pays for it.

A replica's load is the requests it received among the last `--window` x replicas requests (in-flight work under a
steady arrival rate). Reported per policy, replica count and cache size: hit rate, loads per second at `--rate`
requests per second per replica, and the busiest replica's share of requests over the mean (1.0 = balanced).

    python benchmarks/routing_simulation.py                         # 10,000 tasks, Zipf s=1.0, 200,000 requests
    python benchmarks/routing_simulation.py --zipf 0.8 --out benchmarks/results/routing_simulation_s08

Writes <out>.md, <out>.json and <out>.png (hit rate against replicas, a line per policy and cache size).
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import random
import sys
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from hub.atomic import atomic_file  # noqa: E402

POLICIES = ("random", "affinity", "hash")


class Replica:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self.tasks: OrderedDict[int, None] = OrderedDict()
        self.received = 0

    def serve(self, task: int) -> tuple[bool, int | None]:
        """Answer a request for `task`: (it was loaded already, the task a load evicted)."""
        self.received += 1
        if task in self.tasks:
            self.tasks.move_to_end(task)
            return True, None
        self.tasks[task] = None
        return False, self.tasks.popitem(last=False)[0] if len(self.tasks) > self.capacity else None


def zipf_sampler(tasks: int, exponent: float, rng: random.Random):
    """Draws task ids 0..tasks-1 with P(rank k) proportional to 1 / k**exponent."""
    cumulative = list(itertools.accumulate(1.0 / (k + 1) ** exponent for k in range(tasks)))
    total = cumulative[-1]
    return lambda: bisect.bisect_left(cumulative, rng.random() * total)


def simulate(policy: str, replicas: int, capacity: int, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    draw = zipf_sampler(args.tasks, args.zipf, random.Random(args.seed + 1))
    pool = [Replica(capacity) for _ in range(replicas)]
    holders: dict[int, set[int]] = {}  # task -> replicas holding it (what Serve's router learns from replicas)
    recent: deque[int] = deque(maxlen=args.window * replicas)
    load = [0] * replicas
    hits = 0
    for _ in range(args.requests):
        task = draw()
        if policy == "random":
            chosen = rng.randrange(replicas)
        elif policy == "hash":
            chosen = hash((task, args.seed)) % replicas
        else:
            chosen = _affinity(task, holders.get(task, set()), load, replicas, args.overload, rng)
        hit, evicted = pool[chosen].serve(task)
        hits += hit
        if policy == "affinity" and not hit:  # the router's view: what this replica now holds
            if evicted is not None:
                holders[evicted].discard(chosen)
            holders.setdefault(task, set()).add(chosen)
        if len(recent) == recent.maxlen:
            load[recent[0]] -= 1
        recent.append(chosen)
        load[chosen] += 1
    received = [replica.received for replica in pool]
    hit_rate = hits / args.requests
    return {"policy": policy, "replicas": replicas, "capacity": capacity, "hit_rate": hit_rate,
            "loads_per_second": (1 - hit_rate) * args.rate * replicas,
            "imbalance": max(received) / (sum(received) / replicas)}


def _affinity(task: int, holding: set[int], load: list[int], replicas: int, overload: float,
              rng: random.Random) -> int:
    """Serve's multiplexed routing: the less loaded of two holders, else of two replicas."""
    mean = sum(load) / replicas
    if holding:
        pair = rng.sample(sorted(holding), min(2, len(holding)))
        best = min(pair, key=load.__getitem__)
        if load[best] <= overload * max(mean, 1.0):
            return best
    pair = rng.sample(range(replicas), 2)
    return min(pair, key=load.__getitem__)


def report(rows: list[dict[str, Any]], args: argparse.Namespace, out: Path, seconds: float) -> str:
    command = " ".join(["python benchmarks/routing_simulation.py", *sys.argv[1:]])
    lines = [f"# Routing {args.tasks:,} tasks over Ray Serve replicas (simulation)", "",
             f"`{command}` ({seconds:.0f} s). Zipf exponent {args.zipf}, {args.requests:,} requests, loads per second "
             f"at {args.rate:g} requests/s per replica; imbalance: the busiest replica's requests over the mean.", "",
             "| replicas | tasks per replica | policy | hit rate | loads/s | imbalance |", "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['replicas']} | {row['capacity']} | {row['policy']} | {row['hit_rate']:.3f} | "
                     f"{row['loads_per_second']:,.0f} | {row['imbalance']:.2f} |")
    text = "\n".join(lines) + "\n"
    with atomic_file(out.with_suffix(".md")) as path:
        path.write_text(text, encoding="utf-8")
    with atomic_file(out.with_suffix(".json")) as path:
        arguments = {k: str(v.resolve().relative_to(ROOT) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        path.write_text(json.dumps({"command": command, "args": arguments,
                                    "rows": rows}, indent=2), encoding="utf-8")
    _plot(rows, args, out)
    return text


def _plot(rows: list[dict[str, Any]], args: argparse.Namespace, out: Path) -> None:
    """Hit rate (top) and the busiest replica's load over the mean (bottom) against replicas, per cache size."""
    capacities = sorted({row["capacity"] for row in rows})
    counts = sorted({row["replicas"] for row in rows})
    figure, axes = plt.subplots(2, len(capacities), figsize=(4.2 * len(capacities), 6.4), sharex=True, squeeze=False)
    for column, capacity in enumerate(capacities):
        for policy, style in zip(POLICIES, ("o--", "s-", "^:")):
            points = sorted((r["replicas"], r["hit_rate"], r["imbalance"]) for r in rows
                            if r["policy"] == policy and r["capacity"] == capacity)
            axes[0][column].plot([p[0] for p in points], [p[1] for p in points], style, label=policy)
            axes[1][column].plot([p[0] for p in points], [p[2] for p in points], style, label=policy)
        axes[0][column].set(title=f"{capacity} tasks per replica", ylim=(0, 1.02))
        axes[1][column].set(xlabel="replicas", xscale="log", yscale="log")
        axes[1][column].set_yticks([1, 2, 4, 8], labels=["1", "2", "4", "8"])
        for axis in (axes[0][column], axes[1][column]):
            axis.minorticks_off()
            axis.set_xticks(counts, labels=[str(count) for count in counts])
            axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("adapter cache hit rate")
    axes[1][0].set_ylabel("busiest replica / mean")
    axes[0][0].legend()
    figure.suptitle(f"{args.tasks:,} tasks, Zipf s={args.zipf}: routing by task keeps working sets and balance")
    figure.tight_layout()
    with atomic_file(out.with_suffix(".png")) as path:
        figure.savefig(path, dpi=120, format="png")
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--zipf", type=float, default=1.0)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--replicas", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--capacities", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--window", type=int, default=8, help="in-flight requests per replica at a steady rate")
    parser.add_argument("--overload", type=float, default=2.0, help="holders above this many times the mean load "
                                                                   "are passed over")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second per replica")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "routing_simulation")
    args = parser.parse_args()
    started = time.perf_counter()
    rows = [simulate(policy, replicas, capacity, args)
            for replicas in args.replicas for capacity in args.capacities for policy in POLICIES]
    print(report(rows, args, args.out, time.perf_counter() - started))


if __name__ == "__main__":
    main()
