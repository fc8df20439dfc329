"""The `hub` command line: list, run, train, eval; errors exit 2 with a message, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml
from typer.testing import CliRunner

from hub.cli import app

from conftest import REPO, tiny_registry, write_registry

runner = CliRunner()


def test_list_and_run(trained_registry):
    listed = runner.invoke(app, ["list", "--registry", str(trained_registry)])
    assert listed.exit_code == 0 and "paraphrase" in listed.output and "regression" in listed.output
    single = runner.invoke(app, ["run", "sentiment", "good movie", "--registry", str(trained_registry)])
    assert single.exit_code == 0
    assert json.loads(single.stdout)["task"] == "sentiment"
    pair = runner.invoke(app, ["run", "similarity", "the book", "a book", "-r", str(trained_registry)])
    assert isinstance(json.loads(pair.stdout)["value"], float)


def test_errors_exit_2_with_message(trained_registry):
    result = runner.invoke(app, ["run", "sentimnt", "good", "--registry", str(trained_registry)])
    assert result.exit_code == 2
    assert "Did you mean 'sentiment'" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["run", "paraphrase", "one text only", "--registry", str(trained_registry)])
    assert result.exit_code == 2 and "takes a pair" in result.output


def test_train_and_eval(tmp_path, tiny_backbone_dir):
    path = write_registry(tmp_path, tiny_registry(tmp_path, tiny_backbone_dir))
    trained = runner.invoke(app, ["train", "sentiment", "--registry", str(path), "--epochs", "1", "--max-eval-examples", "20"])
    assert trained.exit_code == 0, trained.output
    assert (tmp_path / "adapters" / "sentiment" / "head.safetensors").is_file()
    evaluated = runner.invoke(app, ["eval", "sentiment", "--registry", str(path), "--max-eval-examples", "20"])
    assert evaluated.exit_code == 0
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["examples"] == 20


def test_python_dash_m_hub_works():
    result = subprocess.run([sys.executable, "-m", "hub", "--help"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0 and "train" in result.stdout


def test_demo_and_run_for_every_task_kind(trained_registry):
    runner = CliRunner()
    demo = runner.invoke(app, ["demo", "--registry", str(trained_registry)], env={"COLUMNS": "250"})
    assert demo.exit_code == 0, demo.output
    assert "reader" in demo.output and "entities" in demo.output
    qa = runner.invoke(app, ["run", "reader", "what is good?", "a fine movie", "--registry", str(trained_registry)])
    assert qa.exit_code == 0 and json.loads(qa.output)["answer"] is not None
    tokens = runner.invoke(app, ["run", "entities", "good", "movie", "--registry", str(trained_registry)])
    assert json.loads(tokens.output)["tokens"] == ["good", "movie"]
    relation = runner.invoke(app, ["run", "relations", "<e1>good</e1> beats <e2>dull</e2>", "--registry", str(trained_registry)])
    assert json.loads(relation.output)["label"] in ("Beats(e1,e2)", "Beats(e2,e1)", "Other")
    assert "relations" in demo.output  # its registry example gives the entities as spans


def test_run_takes_every_input_form_the_api_takes_as_json(trained_registry):
    """`hub run TASK --json ...`: a relation's spans, which no text argument can carry; the same answer as hub.run."""
    import hub

    request = {"text": "good beats dull", "head": [0, 4], "tail": [11, 15]}
    spans = runner.invoke(app, ["run", "relations", "--json", json.dumps(request), "-r", str(trained_registry)])
    assert spans.exit_code == 0, spans.output
    assert json.loads(spans.stdout) == hub.Hub.load(trained_registry).run("relations", request)
    marked = runner.invoke(app, ["run", "relations", "--json", '"<e1>good</e1> beats <e2>dull</e2>"', "-r",
                                 str(trained_registry)])
    assert json.loads(marked.stdout)["label"] == json.loads(spans.stdout)["label"]
    for args, message in ((["--json", "{text: 1}"], "is not JSON"), (["good", "--json", "{}"], "one of the two"),
                          ([], "one of the two"), (["no markers here"], "'head': [start, end]")):
        failed = runner.invoke(app, ["run", "relations", *args, "-r", str(trained_registry)])
        flat = " ".join(failed.output.split())
        assert failed.exit_code == 2 and message in flat and "Traceback" not in flat, (args, flat)


def test_serve_refuses_bad_preloads_and_limits_before_starting(trained_registry, monkeypatch):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: (_ for _ in ()).throw(AssertionError("must not start")))
    unknown = runner.invoke(app, ["serve", "--registry", str(trained_registry), "--preload", "sentimant"])
    assert unknown.exit_code == 2 and "Did you mean 'sentiment'" in unknown.output
    bad_limit = runner.invoke(app, ["serve", "--registry", str(trained_registry), "--max-queue", "0"])
    assert bad_limit.exit_code == 2 and "max-queue" in bad_limit.output


def test_serve_starts_uvicorn_with_every_trained_task_loaded(trained_registry, monkeypatch):
    import uvicorn

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app_, **kwargs: started.update(app=app_, **kwargs))
    result = runner.invoke(app, ["serve", "--registry", str(trained_registry), "--preload", "all", "--port", "8765", "--no-access-log"])
    assert result.exit_code == 0, result.output
    assert started["port"] == 8765 and started["access_log"] is False
    from fastapi.testclient import TestClient

    import gc

    gc.unfreeze()  # `hub serve` froze the preloaded tasks out of GC scans; this test process lives on
    with TestClient(started["app"]) as client:
        tasks = client.get("/v1/tasks").json()["tasks"]
    assert all(t["loaded"] for t in tasks) and len(tasks) == 9  # the eight trained tasks and "fill"


def test_serve_and_list_go_on_past_a_broken_task(tmp_path, trained_registry, monkeypatch):
    """`--preload all` warns about a broken adapter and starts; `hub list` shows it unavailable with the reason;
    a public interface without a key is warned about."""
    import gc
    import shutil

    import uvicorn
    import yaml

    shutil.copytree(trained_registry.parent / "adapters", tmp_path / "adapters")
    (tmp_path / "adapters" / "entities" / "head_config.json").write_text("{not json")
    path = write_registry(tmp_path, yaml.safe_load(trained_registry.read_text()))
    listed = runner.invoke(app, ["list", "--registry", str(path)])
    assert listed.exit_code == 0 and "unavailable" in listed.output and "sentiment" in listed.output
    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app_, **kwargs: started.update(app=app_, **kwargs))
    result = runner.invoke(app, ["serve", "--registry", str(path), "--preload", "all", "--host", "0.0.0.0"])
    gc.unfreeze()
    assert result.exit_code == 0, result.output
    assert "warning" in result.output and "entities" in result.output and "without an API key" in result.output
    keyed = runner.invoke(app, ["serve", "--registry", str(path), "--host", "0.0.0.0"], env={"HUB_API_KEY": "k"})
    gc.unfreeze()
    assert keyed.exit_code == 0 and "without an API key" not in keyed.output


def test_train_with_another_adapter_method_and_its_reproduce_command(tmp_path, tiny_backbone_dir):
    from hub.card import card_report

    path = write_registry(tmp_path, tiny_registry(tmp_path, tiny_backbone_dir))
    out = tmp_path / "ia3"
    trained = runner.invoke(app, ["train", "sentiment", "--registry", str(path), "--epochs", "1", "--max-eval-examples",
                                  "20", "--adapter", "{method: ia3}", "--output", str(out)])
    assert trained.exit_code == 0, trained.output
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "IA3"
    command = card_report(out)["command"]
    assert "--adapter '{\"method\": \"ia3\"}'" in command  # the card's command runs as it reads
    for bad, message in (("[1, 2]", "not a mapping"), ("{method: [", "not YAML"), ("{method: nope}", "unknown adapter method"),
                         ("{method:ia3}", "reads as one key")):
        refused = runner.invoke(app, ["train", "sentiment", "--registry", str(path), "--adapter", bad])
        assert refused.exit_code == 2 and message in refused.output, refused.output


def test_run_and_eval_serve_a_folder_trained_elsewhere(tmp_path, trained_registry):
    """`--adapter FOLDER`: a folder `hub train --output` wrote is served without editing the registry; the eval sample
    is drawn with the recipe's seed (the rows `hub train` scores), not the file's first rows."""
    import shutil

    from hub.data import load_split, sample_rows
    from hub.registry import load_registry

    elsewhere = tmp_path / "elsewhere" / "sentiment-v2"
    shutil.copytree(trained_registry.parent / "adapters" / "sentiment", elsewhere)
    document = yaml.safe_load(trained_registry.read_text())
    for task in document["tasks"]:
        task["adapter"] = str(tmp_path / "untrained" / task["name"])  # the registry's own folders do not exist
        for split in ("train", "dev"):
            if task.get("data", {}).get(split):
                task["data"][split] = str(trained_registry.parent / task["data"][split])
    (tmp_path / "untrained").mkdir()
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump(document))
    plain = runner.invoke(app, ["run", "sentiment", "good movie", "-r", str(registry)])
    assert plain.exit_code == 2 and "no trained adapter" in plain.output
    served = runner.invoke(app, ["run", "sentiment", "good movie", "-r", str(registry), "--adapter", str(elsewhere)])
    assert served.exit_code == 0, served.output
    reference = runner.invoke(app, ["run", "sentiment", "good movie", "-r", str(trained_registry)])
    assert json.loads(served.stdout) == json.loads(reference.stdout)
    evaluated = runner.invoke(app, ["eval", "sentiment", "-r", str(registry), "--adapter", str(elsewhere),
                                    "--max-eval-examples", "7"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["examples"] == 7
    loaded = load_registry(registry)
    spec = loaded.task("sentiment")
    dev = load_split(loaded, spec, "dev")
    assert sample_rows(dev, 7, spec.train.seed)["text"] != dev.select(range(7))["text"]  # a sample, not the head
    missing = runner.invoke(app, ["run", "sentiment", "good", "-r", str(registry), "--adapter", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such folder" in " ".join(missing.output.split())
    wrong = runner.invoke(app, ["run", "similarity", "a", "b", "-r", str(registry), "--adapter", str(elsewhere)])
    assert wrong.exit_code == 2 and "Traceback" not in wrong.output  # a classification folder for a regression task


def test_the_cards_reproduce_command_writes_where_the_run_wrote(tmp_path, tiny_backbone_dir):
    path = write_registry(tmp_path, tiny_registry(tmp_path, tiny_backbone_dir))
    out = tmp_path / "my out"
    trained = runner.invoke(app, ["train", "sentiment", "-r", str(path), "--epochs", "1", "--output", str(out)])
    assert trained.exit_code == 0, trained.output
    assert f"--output '{out}'" in (out / "README.md").read_text()
