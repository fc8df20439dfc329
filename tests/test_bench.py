"""`hub bench`: the three training methods, the in-memory evaluation, the evaluate metric module, the
resumable cell log and the written table/plot."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from sklearn.metrics import f1_score, matthews_corrcoef

import hub.bench.cells as cells
from hub.bench import BenchConfig, run_bench, with_data_root
from hub.card import card_metrics
from hub.evaluation import evaluate_runtime
from hub.metrics import compute_metric, evaluate_metric
from hub.registry import load_registry
from hub.training import fit_task, train_task

from conftest import tiny_registry, write_registry


@pytest.fixture
def registry(tmp_path, tiny_backbone_dir):
    return load_registry(write_registry(tmp_path, tiny_registry(tmp_path, tiny_backbone_dir)))


def _backbone_weights(fitted) -> dict[str, torch.Tensor]:
    model = fitted.backbone.model
    return {k: v for k, v in model.state_dict().items() if "lora_" not in k}


def test_methods_train_what_they_say(registry):
    from hub.backbone import load_backbone

    fresh = load_backbone(registry.backbone("tiny"), registry, shared=False).model.state_dict()
    full = fit_task(registry, "sentiment", "full", progress=False)
    probe = fit_task(registry, "sentiment", "probe", progress=False)
    assert full.report["trainable_share"] > 0.95 and probe.report["trainable_share"] < 0.05
    moved = [k for k, v in _backbone_weights(full).items() if not torch.equal(v, fresh[k])]
    assert len(moved) > len(fresh) // 2  # full fine-tuning changes the encoder itself
    assert all(torch.equal(v, fresh[k]) for k, v in _backbone_weights(probe).items())  # the probe never does
    assert probe.report["trainable_parameters"] == sum(p.numel() for p in probe.model.head.parameters())


def test_unknown_method_is_refused(registry):
    from hub.errors import HubError

    with pytest.raises(HubError, match="training method 'adapter' is unknown"):
        fit_task(registry, "sentiment", "adapter", progress=False)


@pytest.mark.parametrize("task", ["paraphrase", "entities"])
def test_in_memory_lora_scores_like_the_served_folder(registry, tmp_path, task):
    """The bench scores a LoRA model in memory; the card scores the saved folder through Hub: same number."""
    from hub.data import load_split

    report = train_task(registry, task, output=tmp_path / "saved", progress=False)
    fitted = fit_task(registry, task, "lora", progress=False)  # same recipe and seed: the same model
    dev = load_split(registry, registry.task(task), "dev")
    in_memory = evaluate_runtime(fitted.runtime(), dev, progress=False)
    assert in_memory == pytest.approx(report["metrics"], abs=1e-6)
    assert card_metrics(tmp_path / "saved") == pytest.approx(report["metrics"], abs=1e-4)


def test_evaluate_module_matches_the_hub_metrics_and_sklearn():
    labels = ["unacceptable", "acceptable"]
    pred = ["acceptable", "acceptable", "unacceptable", "acceptable", "unacceptable"]
    ref = ["acceptable", "unacceptable", "unacceptable", "acceptable", "acceptable"]
    assert evaluate_metric("matthews_correlation", pred, ref, labels)["matthews_correlation"] == pytest.approx(matthews_corrcoef(ref, pred))
    assert evaluate_metric("f1", pred, ref, labels)["f1"] == pytest.approx(f1_score(ref, pred, pos_label="acceptable"))
    cases = [
        ("pearson_spearman", [0.1, 0.5, 0.9, 0.3], [0.0, 1.0, 0.8, 0.1], None),
        ("entity_f1", [["B-PER", "I-PER", "O"], ["B-LOC"]], [["B-PER", "I-PER", "O"], ["B-ORG"]], None),
        ("squad", ["the cat", "", "北京"], [["a cat"], ["x"], ["北京市"]], None),
        ("span_f1", [[(0, 3, "PER")], [], [(2, 4, "LOC"), (2, 5, "ORG")]], [[(0, 3, "PER")], [(1, 2, "LOC")], [(2, 5, "ORG")]], None),
        ("semeval_macro_f1", ["Other", "A(e1,e2)", "A(e2,e1)"], ["A(e1,e2)", "A(e1,e2)", "A(e1,e2)"], ["A(e1,e2)", "A(e2,e1)", "Other"]),
        ("token_accuracy", [["n", "v"], ["n"]], [["n", "n"], ["n"]], None),
    ]
    for name, p, r, lab in cases:
        assert evaluate_metric(name, p, r, lab) == pytest.approx(compute_metric(name, p, r, lab)), name


def _config(tmp_path, **kwargs) -> BenchConfig:
    defaults = {"suite": "glue", "tasks": ["sentiment", "entities"], "methods": ["lora", "full", "probe"], "seeds": [1, 2],
                "max_train_examples": 48, "epochs": 1, "out": tmp_path / "results"}
    return BenchConfig(**{**defaults, **kwargs})


def test_bench_writes_table_json_and_plot_and_resumes(registry, tmp_path, monkeypatch):
    config = _config(tmp_path)
    calls = []
    real_cell = cells.run_cell

    def counted(*args, **kwargs):
        calls.append(args[2:5])
        return real_cell(*args, **kwargs)

    monkeypatch.setattr(cells, "run_cell", counted)
    text = run_bench(config, registry, progress=False, command="hub bench glue")
    assert len(calls) == 12  # 2 tasks x 3 methods x 2 seeds
    out = config.out
    assert (out / "glue.png").stat().st_size > 1000 and (out / "glue.png").read_bytes()[:4] == b"\x89PNG"
    payload = json.loads((out / "glue.json").read_text())
    assert len(payload["cells"]) == 12
    for task in ("sentiment", "entities"):
        for method in ("lora", "full", "probe"):
            scores = [c["score"] for c in payload["cells"] if c["task"] == task and c["method"] == method]
            assert payload["summary"][task][method]["mean"] == pytest.approx(sum(scores) / 2)
    row = next(line for line in text.splitlines() if line.startswith("| sentiment |"))
    lora, full = payload["summary"]["sentiment"]["lora"]["mean"], payload["summary"]["sentiment"]["full"]["mean"]
    assert f"{100 * (lora - full):+.1f}" in row and "±" in row
    assert "| **average** |" in text and "hub bench glue" in text

    # a finished run recomputes nothing
    calls.clear()
    assert run_bench(config, registry, progress=False, command="hub bench glue") == text
    assert calls == []

    # killed in the middle of a cell: the log's last line is half written; only that cell runs again
    log = config.log_path.read_text().splitlines()
    config.log_path.write_text("\n".join(log[:-1]) + "\n" + log[-1][: len(log[-1]) // 2])
    run_bench(config, registry, progress=False, command="hub bench glue")
    assert calls == [("entities", "probe", 2)]

    # a different budget does not reuse the cells of another
    calls.clear()
    run_bench(_config(tmp_path, max_train_examples=32, tasks=["sentiment"], methods=["probe"], seeds=[1]), registry, progress=False)
    assert calls == [("sentiment", "probe", 1)]


@pytest.mark.parametrize("backend", ["processes", "ray"])
def test_cells_spread_over_processes_or_ray_tasks_give_the_serial_results(registry, tmp_path, backend):
    """The same grid, cell by cell here, then two at a time in worker processes or as Ray tasks on a local cluster
    (127.0.0.1): the same cells, fingerprints and scores; the log written by this process alone."""
    if backend == "ray":
        pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[test]' (ray[serve])")
    grid = {"methods": ["lora", "probe"], "seeds": [1]}
    serial, spread = _config(tmp_path / "serial", **grid), _config(tmp_path / backend, **grid)
    run_bench(serial, registry, progress=False)
    if backend == "ray":
        import ray

        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.1")
    try:
        run_bench(spread, registry, progress=False, backend=backend, workers=2, cpus_per_cell=1)
    finally:
        if backend == "ray":
            ray.shutdown()
    cells_of = []
    for config in (serial, spread):
        logged = [json.loads(line) for line in config.log_path.read_text().splitlines()]
        cells_of.append({(c["task"], c["method"], c["seed"]): c for c in logged})
        assert len(logged) == 4  # 2 tasks x 2 methods, each once
    one, many = cells_of
    assert one.keys() == many.keys()
    for key in one:
        assert one[key]["fingerprint"] == many[key]["fingerprint"]
        assert one[key]["score"] == pytest.approx(many[key]["score"], abs=1e-6), key


def test_registered_method_measures_the_registry_adapter(trained_registry, tmp_path):
    registry = load_registry(trained_registry)
    config = _config(tmp_path, tasks=["paraphrase"], methods=["registered"], seeds=[1, 2, 3])
    run_bench(config, registry, progress=False)
    cells = json.loads((config.out / "glue.json").read_text())["cells"]
    assert len(cells) == 1  # one fixed model: one cell whatever the seeds
    assert cells[0]["metrics"] == pytest.approx(card_metrics(registry.adapter_dir(registry.task("paraphrase"))), abs=1e-4)


def test_data_root_moves_only_paths_under_the_shared_data_folder(tmp_path, tiny_backbone_dir):
    document = tiny_registry(tmp_path, tiny_backbone_dir)
    document["tasks"][0]["data"]["train"] = "../shared/data/glue/SST-2/train.tsv"
    registry = load_registry(write_registry(tmp_path, document))
    moved = with_data_root(registry, tmp_path / "data")
    assert moved.task("sentiment").data.train == str((tmp_path / "data" / "glue/SST-2/train.tsv").resolve())
    assert moved.task("sentiment").data.dev == "data/sent_dev.jsonl"  # not under ../shared/data: unchanged


def test_cli_errors_name_the_fix(trained_registry):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "hub", "bench", *args, "--registry", str(trained_registry)],
                              capture_output=True, text=True, timeout=120)

    result = run("superglue")
    assert result.returncode == 2 and "unknown suite 'superglue'" in result.stderr and "glue or clue" in result.stderr
    result = run("glue", "--task", "nope")
    assert result.returncode == 2 and "'nope'" in result.stderr and "sentiment" in result.stderr
    result = run("glue", "--task", "sentiment", "--method", "adapters")
    assert result.returncode == 2 and "unknown method" in result.stderr
    result = run("glue", "--task", "sentiment", "--max-eval-examples", "0")
    assert result.returncode == 2 and "leaves no dev rows" in result.stderr
    result = run("glue", "--task", "sentiment", "--method", "probe", "--epochs", "0")
    assert result.returncode == 2 and "epochs=0.0" in result.stderr and "Traceback" not in result.stderr


def test_hub_data_registry_reads_glue_from_the_hub():
    from conftest import REPO

    registry = load_registry(REPO / "benchmarks" / "registries" / "glue_hub.yaml")
    shipped = load_registry(REPO / "registry.yaml")
    assert [t.name for t in registry.tasks] == ["sst2", "cola", "mrpc", "stsb", "rte"]
    for task in registry.tasks:
        assert (task.data.format, task.data.path, task.data.name, task.data.dev) == ("hf", "nyu-mll/glue", task.name, "validation")
        same = shipped.task(task.name)  # the same task as the shipped registry's, only the data differs
        assert (task.kind, task.labels, task.inputs, task.metric, task.train) == (same.kind, same.labels, same.inputs, same.metric, same.train)
