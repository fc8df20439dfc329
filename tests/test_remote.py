"""`hub push` / `hub pull` against FakeHub with the real, unpatched `huggingface_hub` client.

The client reads `HF_ENDPOINT` and `HF_TOKEN` when it is imported, so each group of CLI calls runs in a
fresh subprocess (typer's CliRunner inside it) and prints the results back as one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fake_hub import FakeHub

from conftest import REPO, tiny_registry, write_registry

TOKEN = "hf_test_token"  # FakeHub's default user "tester"
TEXTS = ["the movie was good", "a dull book", "good"]

SCRIPT = """
import json, sys
from typer.testing import CliRunner
from hub.cli import app
runner = CliRunner()
results = []
for args in json.loads(sys.argv[1]):
    result = runner.invoke(app, args)
    results.append({"code": result.exit_code, "stdout": result.stdout, "output": result.output + repr(result.exception)})
print(json.dumps(results))
"""


@pytest.fixture
def server():
    with FakeHub() as fake:
        yield fake


def hub_env(server: FakeHub, home: Path, token: str | None = TOKEN, offline: bool = False) -> dict[str, str]:
    """The environment of a subprocess whose Hub client talks to the fake Hub (read when it is imported)."""
    env = {key: value for key, value in os.environ.items() if key not in ("HF_TOKEN", "HF_HUB_OFFLINE")}
    env.update(HF_ENDPOINT=server.endpoint, HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1", COLUMNS="1000")
    if token:
        env["HF_TOKEN"] = token
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def hub_cli(server: FakeHub, home: Path, *commands: list[str], token: str | None = TOKEN, offline: bool = False) -> list[dict]:
    """Run `hub` commands in one subprocess pointed at the fake Hub; each gives {code, stdout, output}."""
    env = hub_env(server, home, token, offline)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(commands)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def user_registry(folder: Path, backbone_dir: Path, backbone_id: str = "tests/tiny-bert") -> Path:
    """A user's registry with the tiny backbone and no tasks yet."""
    folder.mkdir()
    document = tiny_registry(folder, backbone_dir, tasks=[])
    document["backbones"][0]["id"] = backbone_id
    return write_registry(folder, document)


def ok(result: dict) -> dict:
    assert result["code"] == 0, result["output"]
    return json.loads(result["stdout"].strip().splitlines()[-1])


def test_pushed_then_pulled_tasks_answer_exactly_as_the_originals(tmp_path, server, trained_registry, tiny_hub, tiny_backbone_dir):
    import hub

    mine = user_registry(tmp_path / "user", tiny_backbone_dir)
    pushed_tagging, pushed_pair, pulled_tagging, pulled_pair = (ok(r) for r in hub_cli(
        server, tmp_path / "home",
        ["push", "entities", "--repo", "tester/entities", "-r", str(trained_registry)],
        ["push", "paraphrase", "--repo", "tester/paraphrase", "-r", str(trained_registry)],
        ["pull", "tester/entities", "--as", "ner", "-r", str(mine)],
        ["pull", "tester/paraphrase", "-r", str(mine)],
    ))
    assert pulled_tagging["hub"] == f"tester/entities@{pushed_tagging['commit']}"  # pinned to the commit, not "main"
    assert pulled_pair["task"] == "paraphrase" and pulled_pair["adapter"] == "adapters/paraphrase"

    pulled = hub.Hub.load(mine)
    assert [t["task"] for t in pulled.tasks()] == ["ner", "paraphrase"]
    strip = lambda result: {k: v for k, v in result.items() if k != "task"}  # noqa: E731
    assert [strip(r) for r in pulled.run("ner", TEXTS)] == [strip(r) for r in tiny_hub.run("entities", TEXTS)]
    pairs = [("the book", "a book"), ("good", "bad")]
    assert [strip(r) for r in pulled.run("paraphrase", pairs)] == [strip(r) for r in tiny_hub.run("paraphrase", pairs)]

    card = server.repos["tester/entities"].commits[pushed_tagging["commit"]].files["README.md"].data.decode()
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["library_name"] == "peft" and metadata["base_model"] == "tests/tiny-bert"
    assert metadata["model-index"][0]["results"] and metadata["bert_adapter_hub"]["task"]["kind"] == "tagging"
    assert metadata["datasets"] == ["tests/tiny-conll"]  # the registry's data.hub_id
    assert "PeftModel.from_pretrained" in card and 'hub.run("entities"' in card


def test_pull_pins_a_revision_and_pushes_go_to_branches(tmp_path, server, trained_registry, tiny_backbone_dir):
    mine = user_registry(tmp_path / "user", tiny_backbone_dir)
    first, second, branch = (ok(r) for r in hub_cli(
        server, tmp_path / "home",
        ["push", "sentiment", "--repo", "tester/multi", "-r", str(trained_registry)],
        ["push", "paraphrase", "--repo", "tester/multi", "-r", str(trained_registry)],
        ["push", "sentiment", "--repo", "tester/multi", "--revision", "exp", "-r", str(trained_registry)],
    ))
    assert first["commit"] != second["commit"]
    old, new, experimental = (ok(r) for r in hub_cli(
        server, tmp_path / "home",
        ["pull", f"tester/multi@{first['commit']}", "--as", "old", "-r", str(mine)],
        ["pull", "tester/multi", "--as", "new", "-r", str(mine)],
        ["pull", "tester/multi@exp", "--as", "experimental", "-r", str(mine)],
    ))
    from hub.registry import load_registry

    registry = load_registry(mine)
    assert registry.task("old").labels == ["negative", "positive"] and registry.task("new").labels == ["different", "same"]
    assert new["hub"] == f"tester/multi@{second['commit']}" and experimental["hub"] == f"tester/multi@{branch['commit']}"


def test_private_repo_needs_the_token(tmp_path, server, trained_registry, tiny_backbone_dir):
    mine = user_registry(tmp_path / "user", tiny_backbone_dir)
    ok(hub_cli(server, tmp_path / "home", ["push", "sentiment", "--repo", "tester/secret", "--private", "-r", str(trained_registry)])[0])
    before = mine.read_text()
    anonymous, = hub_cli(server, tmp_path / "anon", ["pull", "tester/secret", "-r", str(mine)], token=None)
    assert anonymous["code"] == 2 and "not found" in anonymous["output"] and "HF_TOKEN" in anonymous["output"]
    assert mine.read_text() == before and not (mine.parent / "adapters").exists()
    ok(hub_cli(server, tmp_path / "home", ["pull", "tester/secret", "-r", str(mine)])[0])


def test_refused_pulls_leave_the_registry_and_store_untouched(tmp_path, server, trained_registry, tiny_backbone_dir):
    hub_cli_pushes = [["push", "sentiment", "--repo", f"tester/{name}", "-r", str(trained_registry)] for name in ("corrupt", "cut", "fine")]
    for result in hub_cli(server, tmp_path / "home", *hub_cli_pushes):
        ok(result)
    server.corrupt("tester/corrupt", "adapter_model.safetensors")
    server.fail_after_bytes("tester/cut", "head.safetensors", 16, times=100)
    mine = user_registry(tmp_path / "user", tiny_backbone_dir)
    other_base = user_registry(tmp_path / "other", tiny_backbone_dir, backbone_id="someone/other-bert")
    before = {path: path.read_text() for path in (mine, other_base)}

    corrupt, cut, wrong_base, missing, bad_ref = hub_cli(
        server, tmp_path / "pull-home",
        ["pull", "tester/corrupt", "-r", str(mine)],
        ["pull", "tester/cut", "-r", str(mine)],
        ["pull", "tester/fine", "-r", str(other_base)],
        ["pull", "tester/absent", "-r", str(mine)],
        ["pull", "no-owner", "-r", str(mine)],
    )
    assert corrupt["code"] == 2 and "does not match the Hub's sha256" in corrupt["output"]
    assert cut["code"] == 2 and "interrupted" in cut["output"] and "nothing was added" in cut["output"]
    assert wrong_base["code"] == 2 and "trained on 'tests/tiny-bert'" in wrong_base["output"]
    assert missing["code"] == 2 and "not found" in missing["output"]
    assert bad_ref["code"] == 2 and "owner/name" in bad_ref["output"]
    for result in (corrupt, cut, wrong_base, missing, bad_ref):
        assert "Traceback" not in result["output"]
    assert {path: path.read_text() for path in before} == before
    assert not (mine.parent / "adapters").exists() and not (other_base.parent / "adapters").exists()

    server.repair("tester/corrupt", "adapter_model.safetensors")  # the corrupt copy left the cache: a retry is clean
    ok(hub_cli(server, tmp_path / "pull-home", ["pull", "tester/corrupt", "-r", str(mine)])[0])


def test_an_entry_naming_a_hub_adapter_is_fetched_on_first_use_then_served_offline(tmp_path, server, trained_registry,
                                                                                   tiny_backbone_dir, tiny_hub):
    pushed = ok(hub_cli(server, tmp_path / "home", ["push", "sentiment", "--repo", "tester/sentiment", "-r", str(trained_registry)])[0])
    entry = {"name": "remote_sentiment", "backbone": "tiny", "kind": "classification", "labels": ["negative", "positive"],
             "inputs": ["text"], "metric": "accuracy", "hub": f"tester/sentiment@{pushed['commit']}"}
    registries = {}
    for name, hub_ref in (("online", entry["hub"]), ("offline", entry["hub"]), ("uncached", "tester/absent@main")):
        folder = tmp_path / name
        folder.mkdir()
        document = tiny_registry(folder, tiny_backbone_dir, tasks=[{**entry, "hub": hub_ref}])
        registries[name] = write_registry(folder, document)

    online, = hub_cli(server, tmp_path / "home", ["run", "remote_sentiment", "good movie", "-r", str(registries["online"])])
    assert (tmp_path / "online" / "adapters" / "remote_sentiment" / "head.safetensors").is_file()
    requests = len(server.request_log)
    offline, uncached = hub_cli(server, tmp_path / "home", ["run", "remote_sentiment", "good movie", "-r", str(registries["offline"])],
                                ["run", "remote_sentiment", "good movie", "-r", str(registries["uncached"])], offline=True)
    assert len(server.request_log) == requests  # served from the local cache, the Hub never asked
    expected = {k: v for k, v in tiny_hub.run("sentiment", "good movie").items() if k != "task"}
    for result in (ok(online), ok(offline)):
        assert {k: v for k, v in result.items() if k != "task"} == expected
    assert uncached["code"] == 2 and "not in the local Hugging Face cache" in uncached["output"]
    assert not (tmp_path / "uncached" / "adapters").exists()


def test_registry_append_is_atomic_and_refuses_what_would_break_the_file(tmp_path, tiny_backbone_dir):
    from hub.errors import RegistryError, RemoteError
    from hub.registry import load_registry
    from hub.remote import append_task

    path = user_registry(tmp_path / "user", tiny_backbone_dir)
    entry = {"name": "mine", "backbone": "tiny", "kind": "classification", "labels": ["no", "yes"], "inputs": ["text"],
             "metric": "accuracy", "hub": "tester/mine@abc"}
    append_task(path, entry)
    assert load_registry(path).task("mine").hub == "tester/mine@abc"
    before = path.read_text()
    with pytest.raises(RegistryError, match="duplicate name"):
        append_task(path, entry)
    assert path.read_text() == before and sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == []

    tasks_first = tmp_path / "tasks_first.yaml"
    tasks_first.write_text("tasks: []\n" + yaml.safe_dump({"backbones": yaml.safe_load(before)["backbones"]}))
    with pytest.raises(RemoteError, match="not the last section"):
        append_task(tasks_first, entry)
