"""The hub as a Ray Serve application: the same HTTP API as `hub serve`, answered by N replicas.

Two deployments:
- `HubIngress` (FastAPI ingress, usually one replica): `hub.server.create_app` itself, so paths, schemas, errors,
  limits, API key and metrics are `hub serve`'s; it loads no model. Its answerer sends each request to a replica
  through a handle with `multiplexed_model_id` = the request's routing task (its most frequent task), so Serve's
  router prefers a replica that already holds that task (Serve's model multiplexing, the replica's tasks as its LRU).
- `HubReplica` (N replicas, or autoscaled): each holds the backbones once, its own adapter cache and its own
  dynamic batcher. Serve's `@serve.batch` would split batches by model id, undoing the hub's point; instead every
  request a replica receives (`max_ongoing_requests` of them at once) goes into its batcher, so requests for all the
  tasks it holds meet in one backbone pass per language. Each answer says whether its routing task was already loaded
  (the affinity hit rate) and carries the replica's counters (rounds, items, rounds that mixed tasks).

Back-pressure: a replica holds at most `max_ongoing_requests` requests, the handle queues at most
`max_queued_requests` more (Serve's BackPressureError), and each replica's batcher at most `max_queue` items: past
any of them a request gets 503 with Retry-After, as `hub serve` answers. A replica that dies mid-request (its actor)
is retried on another (`retries`, counted) and, if none answers, the request gets a 503 that says so: nothing is
lost silently. Requests are inference only, so a retry cannot do anything twice.

    hub ray-serve --replicas 2                     # a local Ray cluster, or RAY_ADDRESS's
    serve run benchmarks/ray_serve_config.yaml     # Ray's own CLI, with the documented config
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import BaseModel, ConfigDict, Field

from . import errors
from .answering import limited_batcher
from .batching import BatchRecord, OverloadedError
from .embeddings import is_embedding_name
from .errors import DeadlineExceededError, HubError, InputError, ServiceUnavailableError
from .server import ServerLimits, create_app
from .service import Hub

APP_NAME = "hub"


class RayServeOptions(BaseModel):
    """The Serve application's settings: `args` of a Serve config file, or `hub ray-serve`'s options."""

    model_config = ConfigDict(extra="forbid")
    registry: str = Field(description="the registry file every replica serves (a path each node can read)")
    replicas: int = Field(2, ge=1, description="replicas of HubReplica (ignored under autoscaling)")
    autoscaling: dict[str, Any] | None = Field(
        None, description="Serve's autoscaling_config for HubReplica, e.g. {min_replicas: 1, max_replicas: 8, "
                          "target_ongoing_requests: 16}")
    tasks_per_replica: int = Field(32, ge=1, description="tasks a replica keeps loaded (its LRU; the router's "
                                                         "affinity set)")
    max_ongoing_requests: int = Field(64, ge=1, description="requests one replica works on at once (its batcher "
                                                            "merges them)")
    max_queued_requests: int = Field(256, ge=1, description="requests waiting for a replica; more get 503")
    retries: int = Field(2, ge=0, description="times a request whose replica died is sent to another one")
    num_cpus: float = Field(1.0, gt=0, description="CPUs Ray reserves per replica (Ray sets its torch threads, "
                                                   "OMP_NUM_THREADS, to this)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs Ray reserves per replica (with hub: {device: cuda})")
    hub: dict[str, Any] = Field({}, description="Hub options per replica: max_batch_size, device, dtype, ...")
    limits: dict[str, Any] = Field({}, description="ServerLimits fields (max_queue, request_timeout_s, api_key, ...)")

    def server_limits(self) -> ServerLimits:
        return ServerLimits(**{**self.limits, "allowed_hosts": tuple(self.limits.get("allowed_hosts", ())),
                               "cors_origins": tuple(self.limits.get("cors_origins", ()))})


def routing_task(requests: list[tuple[str, Any]]) -> str:
    """The task a request is routed by: its most frequent task (the first such, on a tie)."""
    counts = Counter(task for task, _ in requests)
    return max(counts, key=lambda task: (counts[task], -next(i for i, (t, _) in enumerate(requests) if t == task)))


# ---- the replica ---------------------------------------------------------------------------------------------------

@dataclass
class ReplicaCounters:
    """What a replica has done, sent with every answer (the ingress keeps each replica's latest)."""

    replica: str
    rounds: int = 0
    items: int = 0
    rows: int = 0
    mixed_rounds: int = 0  # rounds whose rows came from more than one task
    routed_hits: int = 0  # requests whose routing task was already loaded here
    routed_misses: int = 0
    resident_tasks: int = 0
    resident: list[str] = field(default_factory=list)  # the loaded tasks' names
    queued_items: int = 0
    updated: float = field(default_factory=time.time)

    def batch(self, record: BatchRecord) -> None:
        self.rounds += 1
        self.items += record.items
        self.rows += record.rows
        self.mixed_rounds += record.tasks > 1


class TaskLease:
    """A task held by a replica for Serve's multiplexing: when Serve evicts it (its LRU), the hub's cache drops it."""

    def __init__(self, hub: Hub, task: str):
        self.hub, self.task, self.released = hub, task, False

    def __del__(self) -> None:  # Serve calls it on eviction; the garbage collector may call it again
        if not self.released:
            self.released = True
            self.hub.cache.drop(self.task)


class HubReplicaBase:
    """One replica: a Hub (backbones once, an adapter cache) and its dynamic batcher."""

    def __init__(self, options: dict[str, Any]):
        import ray

        self.options = RayServeOptions.model_validate(options)
        self.limits = self.options.server_limits()
        hub_options = {"max_batch_size": self.limits.max_batch_size or 64, **self.options.hub}
        self.hub = Hub.load(self.options.registry, max_tasks=self.options.tasks_per_replica, **hub_options)
        self.counters = ReplicaCounters(replica=ray.get_runtime_context().get_actor_name() or "replica")
        self.batcher = limited_batcher(self.hub, self.limits, self.counters.batch)

    async def lease_task(self, task: str) -> TaskLease:
        """Load `task` here (Serve's multiplexed loader, wrapped in `serve.multiplexed` by `replica_deployment`)."""
        await asyncio.to_thread(self.hub.runtime, task)
        return TaskLease(self.hub, task)

    async def answer(self, requests: list[tuple[str, Any]]) -> dict[str, Any]:
        """{results, hit, counters} or {error: [class name, message], counters}: errors cross Ray as data."""
        from ray import serve

        task = serve.get_multiplexed_model_id() or routing_task(requests)
        hit = self.hub.cache.loaded(task)
        try:
            await self.get_task(task)  # type: ignore[attr-defined]  # the multiplexed lease_task
            future = await asyncio.to_thread(self.batcher.submit, requests)
            results = await asyncio.wrap_future(future)
        except HubError as exc:
            return {"error": [type(exc).__name__, str(exc)], "counters": self._counters()}
        if hit:
            self.counters.routed_hits += 1
        else:
            self.counters.routed_misses += 1
        return {"results": results, "hit": hit, "counters": self._counters()}

    def _counters(self) -> dict[str, Any]:
        self.counters.resident = self.hub.cache.resident()
        self.counters.resident_tasks = len(self.counters.resident)
        self.counters.queued_items = self.batcher.queued
        self.counters.updated = time.time()
        return asdict(self.counters)

    def check_health(self) -> None:
        """Serve's health check: a dead batch worker makes Serve replace this replica."""
        if not self.batcher.alive:
            raise RuntimeError("the batch worker stopped")


def replica_deployment(options: RayServeOptions) -> Any:
    """The HubReplica deployment, its multiplexing LRU sized to the options (Serve fixes it at decoration)."""
    from ray import serve

    class HubReplica(HubReplicaBase):
        @serve.multiplexed(max_num_models_per_replica=options.tasks_per_replica)
        async def get_task(self, task: str) -> TaskLease:
            return await self.lease_task(task)

    settings: dict[str, Any] = {"max_ongoing_requests": options.max_ongoing_requests,
                                "max_queued_requests": options.max_queued_requests,
                                "ray_actor_options": {"num_cpus": options.num_cpus, "num_gpus": options.num_gpus}}
    if options.autoscaling:
        settings["autoscaling_config"] = options.autoscaling
    else:
        settings["num_replicas"] = options.replicas
    return serve.deployment(name="HubReplica", **settings)(HubReplica)


# ---- the ingress ---------------------------------------------------------------------------------------------------

_ERROR_CLASSES: dict[str, type[HubError]] = {
    **{name: value for name, value in vars(errors).items() if isinstance(value, type) and issubclass(value, HubError)},
    "OverloadedError": OverloadedError}


def _raise_remote(name: str, message: str) -> None:
    """Raise the replica's refusal here, as the same class (UnknownTaskError's text is already formed)."""
    cls = _ERROR_CLASSES.get(name, HubError)
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    raise error


class RayAnswerer:
    """`hub.answering.Answerer` over a HubReplica handle: routing by task, retries, affinity counts."""

    def __init__(self, hub: Hub, replicas: Any, limits: ServerLimits, retries: int):
        self.hub, self.replicas, self.limits, self.retries = hub, replicas, limits, retries
        self.hits = self.misses = self.retried = self.lost = self.answered = 0
        self.replica_counters: dict[str, dict[str, Any]] = {}
        self.started = False

    async def start(self, metrics: CollectorRegistry, on_batch: Any) -> None:
        metrics.register(_RayCollector(self))
        self.started = True

    async def answer(self, requests: list[tuple[str, Any]]) -> list[dict[str, Any]]:
        from ray.exceptions import ActorUnavailableError, RayActorError
        from ray.serve.exceptions import BackPressureError

        for task, _ in requests:  # an unknown name is refused here, not routed (nor loaded) as a model id
            if not is_embedding_name(task):
                self.hub.registry.task(task)
        handle = self.replicas.options(multiplexed_model_id=routing_task(requests))
        for attempt in range(self.retries + 1):
            try:
                reply = await asyncio.wait_for(handle.answer.remote(requests), self.limits.request_timeout_s)
                break
            except asyncio.TimeoutError:
                raise DeadlineExceededError(f"the request was not answered within {self.limits.request_timeout_s:.1f}"
                                            " s; the replicas are busy: retry later or send less work.") from None
            except BackPressureError:
                raise OverloadedError("overloaded: every replica is busy and the queue for them is full; retry "
                                      "shortly, or add replicas (replicas / autoscaling).") from None
            except (RayActorError, ActorUnavailableError):
                self.lost += 1
                if attempt == self.retries:
                    raise ServiceUnavailableError(
                        f"the replica answering this request stopped, and {self.retries} retries on others failed "
                        "too; retry shortly (Serve is replacing the replica).") from None
                self.retried += 1
                await asyncio.sleep(0.2 * (attempt + 1))
        counters = reply["counters"]
        self.replica_counters[counters["replica"]] = counters
        if "error" in reply:
            _raise_remote(*reply["error"])
        self.answered += 1
        if reply["hit"]:
            self.hits += 1
        else:
            self.misses += 1
        return reply["results"]

    def health(self) -> dict[str, Any]:
        replicas = self.replica_counters
        return {"status": "ok" if self.started else "starting", "backend": "ray_serve",
                "queued_items": sum(r["queued_items"] for r in replicas.values()),
                "loaded_tasks": sum(r["resident_tasks"] for r in replicas.values()),
                "routing": {"hits": self.hits, "misses": self.misses, "retried": self.retried, "lost": self.lost},
                "replicas": replicas}

    def not_ready(self) -> str | None:
        return None if self.started else "the ingress is starting"

    def loaded(self, task: str) -> bool:
        """Whether a replica held `task` when it last answered (a replica's cache may have changed since)."""
        return any(task in counters["resident"] for counters in self.replica_counters.values())

    async def close(self) -> None:
        self.started = False


class _RayCollector:
    """Prometheus view of routing (affinity hits, retries, lost replicas) and each replica's latest counters."""

    def __init__(self, answerer: RayAnswerer):
        self.answerer = answerer

    def collect(self) -> Iterator:
        a = self.answerer
        routed = CounterMetricFamily("hub_ray_routed", "requests answered, by whether their task was loaded on the "
                                                       "replica that got them", labels=["outcome"])
        routed.add_metric(["hit"], a.hits)
        routed.add_metric(["miss"], a.misses)
        yield routed
        yield CounterMetricFamily("hub_ray_retries", "requests sent again after their replica died", value=a.retried)
        yield CounterMetricFamily("hub_ray_replica_failures", "replica calls that failed (actor died)", value=a.lost)
        for name, help_ in (("rounds", "batch rounds"), ("mixed_rounds", "batch rounds mixing tasks"),
                            ("items", "items answered"), ("resident_tasks", "tasks loaded"),
                            ("queued_items", "items waiting")):
            family = (GaugeMetricFamily if name in ("resident_tasks", "queued_items") else CounterMetricFamily)(
                f"hub_replica_{name}", f"per replica: {help_} (as of its last answer)", labels=["replica"])
            for replica, counters in a.replica_counters.items():
                family.add_metric([replica], counters[name])
            yield family


class HubIngressBase:
    """The FastAPI ingress: `hub serve`'s app over a RayAnswerer."""

    def __init__(self, replicas: Any, options: dict[str, Any]):
        self.options = RayServeOptions.model_validate(options)
        self.hub = Hub.load(self.options.registry)  # lists tasks and shapes the schema; loads nothing
        self.answerer = RayAnswerer(self.hub, replicas, self.options.server_limits(), self.options.retries)

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.hub, self.options.server_limits(), answerer=self.answerer)


def build_app(args: dict[str, Any]) -> Any:
    """Serve's application builder (`import_path: hub.ray_serve:build_app`, `args:` = RayServeOptions)."""
    from ray import serve

    try:
        options = RayServeOptions.model_validate(args)
    except ValueError as exc:
        raise InputError(f"Ray Serve options: {exc}") from None
    registry = Path(options.registry).expanduser().resolve()
    if not registry.is_file():
        raise InputError(f"Ray Serve options: registry {registry} is not a file; give the registry.yaml to serve.")
    options = options.model_copy(update={"registry": str(registry)})
    ingress = serve.deployment(name="HubIngress", max_ongoing_requests=4 * options.max_queued_requests,
                               ray_actor_options={"num_cpus": 0.25})(
        serve.ingress()(HubIngressBase))
    return ingress.bind(replica_deployment(options).bind(options.model_dump()), options.model_dump())
