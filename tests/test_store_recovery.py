"""Interrupted writes never block their retry: `hub pull`, the lazy fetch of a `hub:` entry and an adapter
folder write are killed (os._exit in a child process, so no cleanup code runs) right after each of their
steps; the store and registry must then be as before or complete, and a plain retry must finish the job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fake_hub import FakeHub

from conftest import REPO, tiny_registry, write_registry
from test_remote import hub_cli, hub_env, ok, user_registry

KILLED = 17

# Runs `hub` commands in forked children, each killed by os._exit right after one step of what it does.
KILL_SCRIPT = f"""
import json, os, sys, tempfile
from pathlib import Path
from typer.testing import CliRunner
import heads.base
import hub.adapter_folder
import hub.atomic
import hub.remote
import hub.training
import peft
from hub.cli import app

def kill_after(owner, name, hit=lambda *args, **kwargs: True):
    real = getattr(owner, name)
    def wrapped(*args, **kwargs):
        result = real(*args, **kwargs)
        if hit(*args, **kwargs):
            os._exit({KILLED})
        return result
    setattr(owner, name, wrapped)

STEPS = {{
    "staging created": (tempfile, "mkdtemp", lambda *args, prefix="", **kwargs: ".tmp-" in prefix),
    "files written": (hub.remote, "_copy_files"),
    "checks passed": (hub.adapter_folder.AdapterFolder, "load"),
    "folder renamed": (os, "replace", lambda src, dst, *args, **kwargs: Path(dst).parent.name == "adapters"),
    "unfinished folder discarded": (os, "replace", lambda src, dst, *args, **kwargs: Path(src).parent.name == "adapters"
                                    and Path(dst).parent.parent.name == "adapters"),
    "registry staged": (hub.remote, "load_registry", lambda path, **kwargs: Path(path).name.startswith(".")),
    "registry renamed": (os, "replace", lambda src, dst, *args, **kwargs: Path(dst).name == "registry.yaml"),
    "adapter saved": (peft.PeftModel, "save_pretrained"),
    "head saved": (heads.base.Head, "save"),
    "card built": (hub.training, "build_card"),
    "folder swapped in": (hub.atomic, "_swap_in"),
}}
codes = []
for step, args in json.loads(sys.argv[1]):
    sys.stdout.flush()
    child = os.fork()
    if child == 0:
        kill_after(*STEPS[step])
        result = CliRunner().invoke(app, args)
        sys.stderr.write(f"{{step}}: not killed: {{result.output}} {{result.exception!r}}\\n")
        os._exit(0)
    codes.append(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))
print(json.dumps(codes))
"""

PULL_STEPS = ["staging created", "files written", "checks passed", "folder renamed", "registry staged",
              "registry renamed"]
PULL_CASES = {step.replace(" ", "_"): [step] for step in PULL_STEPS} | {
    "retry_killed_after_discard": ["folder renamed", "unfinished folder discarded"],
    "retry_killed_after_rename": ["folder renamed", "folder renamed"],
    "retry_killed_after_registry": ["registry staged", "registry renamed"],
}
FETCH_STEPS = ["staging created", "files written", "folder renamed"]
TRAIN_STEPS = ["staging created", "adapter saved", "head saved", "card built", "folder swapped in"]
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "head_config.json", "head.safetensors")


@pytest.fixture
def server():
    with FakeHub() as fake:
        yield fake


def killed(server: FakeHub, home: Path, kills: list[tuple[str, list[str]]]) -> None:
    """Run each (step, hub command) in a child killed right after that step; the step must be reached."""
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, json.dumps(kills)], env=hub_env(server, home),
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [KILLED] * len(kills), proc.stderr[-3000:]


def hidden(*folders: Path) -> list[str]:
    """What an atomic write may leave: staging folders, temp files, install markers."""
    found = [p.name for folder in folders if folder.is_dir() for p in folder.iterdir() if p.name.startswith(".")]
    return found + [".../" + p.name for folder in folders if folder.is_dir() for p in folder.glob("*/.*")]


def assert_complete_or_absent(folder: Path, original: Path) -> None:
    if folder.exists():
        read = lambda where: {name: (where / name).read_bytes() for name in ADAPTER_FILES}  # noqa: E731
        assert read(folder) == read(original)


def push_sentiment(server: FakeHub, home: Path, trained_registry: Path) -> str:
    """Push the trained tiny `sentiment` task to tester/sentiment; return its commit."""
    command = ["push", "sentiment", "--repo", "tester/sentiment", "-r", str(trained_registry)]
    return ok(hub_cli(server, home, command)[0])["commit"]


def test_a_pull_killed_after_any_step_is_finished_by_a_plain_retry(tmp_path, server, trained_registry,
                                                                    tiny_backbone_dir):
    from hub.registry import load_registry

    pinned = f"tester/sentiment@{push_sentiment(server, tmp_path / 'home', trained_registry)}"
    registries = {case: user_registry(tmp_path / case, tiny_backbone_dir) for case in PULL_CASES}
    before = {case: path.read_text() for case, path in registries.items()}
    pull = lambda case: ["pull", "tester/sentiment", "-r", str(registries[case])]  # noqa: E731
    killed(server, tmp_path / "home", [(step, pull(case)) for case, steps in PULL_CASES.items() for step in steps])

    original = trained_registry.parent / "adapters" / "sentiment"
    for case, path in registries.items():
        tasks = load_registry(path).tasks  # the registry parses: the old file or the complete new one
        assert path.read_text() == before[case] or [t.hub for t in tasks] == [pinned], case
        assert_complete_or_absent(path.parent / "adapters" / "sentiment", original)
        assert (path.parent / "adapters" / "sentiment").is_dir() or not tasks, case  # an entry never lacks its folder
    assert hidden(registries["staging_created"].parent / "adapters") != []  # the kill did leave its staging folder

    for case, result in zip(registries, hub_cli(server, tmp_path / "home", *(pull(case) for case in registries))):
        assert ok(result)["hub"] == pinned, case
        store = registries[case].parent / "adapters"
        assert [t.name for t in load_registry(registries[case]).tasks] == ["sentiment"], case
        assert_complete_or_absent(store / "sentiment", original)
        assert (store / "sentiment").is_dir() and hidden(registries[case].parent, store) == [], case


def test_a_refused_name_or_folder_still_is(tmp_path, server, trained_registry, tiny_backbone_dir):
    push_sentiment(server, tmp_path / "home", trained_registry)
    done, mine = (user_registry(tmp_path / name, tiny_backbone_dir) for name in ("done", "mine"))
    (mine.parent / "adapters" / "sentiment").mkdir(parents=True)
    (mine.parent / "adapters" / "sentiment" / "notes.txt").write_text("my own work")
    pull = lambda registry: ["pull", "tester/sentiment", "-r", str(registry)]  # noqa: E731
    first, again, theirs = hub_cli(server, tmp_path / "home", pull(done), pull(done), pull(mine))
    ok(first)
    assert again["code"] == 2 and "already has a task 'sentiment'" in again["output"]  # a finished pull is not redone
    assert theirs["code"] == 2 and "already exists" in theirs["output"]  # a folder no pull marked is the user's
    assert (mine.parent / "adapters" / "sentiment" / "notes.txt").read_text() == "my own work"


def test_a_fetch_killed_after_any_step_is_finished_on_next_use(tmp_path, server, trained_registry, tiny_backbone_dir,
                                                               tiny_hub):
    commit = push_sentiment(server, tmp_path / "home", trained_registry)
    entry = {"name": "remote_sentiment", "backbone": "tiny", "kind": "classification", "metric": "accuracy",
             "labels": ["negative", "positive"], "inputs": ["text"], "hub": f"tester/sentiment@{commit}"}
    registries = {}
    for step in FETCH_STEPS:
        folder = tmp_path / step.replace(" ", "_")
        folder.mkdir()
        registries[step] = write_registry(folder, tiny_registry(folder, tiny_backbone_dir, tasks=[entry]))
    run = lambda step: ["run", "remote_sentiment", "good movie", "-r", str(registries[step])]  # noqa: E731
    killed(server, tmp_path / "home", [(step, run(step)) for step in FETCH_STEPS])

    original = trained_registry.parent / "adapters" / "sentiment"
    for step in FETCH_STEPS:
        assert_complete_or_absent(registries[step].parent / "adapters" / "remote_sentiment", original)
    expected = {k: v for k, v in tiny_hub.run("sentiment", "good movie").items() if k != "task"}
    for step, result in zip(FETCH_STEPS, hub_cli(server, tmp_path / "home", *(run(step) for step in FETCH_STEPS))):
        assert {k: v for k, v in ok(result).items() if k != "task"} == expected, step
        assert hidden(registries[step].parent / "adapters") == [], step


def kill_after(owner: object, name: str, hit: Callable[..., bool] = lambda *args: True) -> None:
    """Make `owner.name` end the process right after a call for which `hit` holds (only ever in a child)."""
    real = getattr(owner, name)

    def wrapped(*args):
        result = real(*args)
        if hit(*args):
            os._exit(KILLED)
        return result

    setattr(owner, name, wrapped)


def killed_write(target: Path, step: str) -> None:
    """Write `target` in a forked child killed at `step`: no cleanup code of the write runs."""
    import hub.adapter_folder
    import hub.atomic

    def write(staging: Path) -> None:
        (staging / "weights").write_text("new")
        if step == "inside write":
            os._exit(KILLED)

    child = os.fork()
    if child == 0:
        try:
            if step == "after exchange":
                kill_after(hub.atomic, "_exchange")
            if step == "between renames":
                hub.atomic._exchange = lambda first, second: False  # an OS without an atomic exchange: two renames
                kill_after(os, "replace", lambda src, dst: Path(dst).name == "folder")
            hub.adapter_folder.AdapterFolder.write(target, write, lambda staging: None)
        finally:
            os._exit(0)
    assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == KILLED


def old_adapter(tmp_path: Path) -> Path:
    target = tmp_path / "adapters" / "sentiment"
    target.mkdir(parents=True)
    (target / "weights").write_text("old")
    return target


def test_a_write_killed_inside_keeps_the_old_folder_and_the_next_write_cleans_up(tmp_path):
    from hub.adapter_folder import AdapterFolder
    from hub.atomic import atomic_folder

    target = old_adapter(tmp_path)
    killed_write(target, "inside write")
    assert (target / "weights").read_text() == "old"
    assert [p.name.split("-")[0] for p in target.parent.iterdir() if p.name.startswith(".")] == [".sentiment.tmp"]
    with pytest.raises(RuntimeError):
        with atomic_folder(target):
            raise RuntimeError("a failed write cleans up too")
    assert sorted(p.name for p in target.parent.iterdir()) == ["sentiment"]
    assert (target / "weights").read_text() == "old"
    AdapterFolder.write(target, lambda staging: (staging / "weights").write_text("new"), lambda staging: None)
    assert (target / "weights").read_text() == "new"


def has_exchange(folder: Path) -> bool:
    """Whether this OS and file system swap two folders in one step (else atomic_folder uses two renames)."""
    from hub.atomic import _exchange

    first, second = folder / "first", folder / "second"
    first.mkdir()
    second.mkdir()
    (first / "weights").write_text("first")
    swapped = _exchange(first, second)
    assert (second / "weights").exists() == swapped
    return swapped


@pytest.mark.parametrize("step", ["after exchange", "between renames"])
def test_a_write_killed_while_swapping_folders_leaves_one_of_them(tmp_path, step):
    from hub.atomic import atomic_folder

    if step == "after exchange" and not has_exchange(tmp_path):
        pytest.skip("this OS or file system has no atomic exchange (the two-rename fallback is tested too)")
    target = old_adapter(tmp_path)
    killed_write(target, step)
    if step == "after exchange":
        assert (target / "weights").read_text() == "new"
    else:  # the old folder was moved aside: the next write puts it back before anything else
        assert not target.exists()
        with pytest.raises(RuntimeError):
            with atomic_folder(target):
                raise RuntimeError("this write fails")
        assert (target / "weights").read_text() == "old"
    with atomic_folder(target) as staging:
        (staging / "weights").write_text("newest")
    assert sorted(p.name for p in target.parent.iterdir()) == ["sentiment"]
    assert (target / "weights").read_text() == "newest"


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_dead_or_long_unlocked_writers_staging_is_removed(tmp_path):
    from hub.atomic import STALE_AFTER_S, atomic_file, atomic_folder

    target = old_adapter(tmp_path)
    registry = tmp_path / "registry.yaml"
    registry.write_text("old\n")
    dead, alive = dead_pid(), os.getpid()
    leftovers = [tmp_path / f".registry.yaml.tmp-{dead}-abc123", target.parent / f".sentiment.tmp-{dead}-abc123",
                 target.parent / f".sentiment.old-{alive}-old123", target.parent / ".sentiment.tmp-legacy12"]
    young = [target.parent / f".sentiment.tmp-{alive}-young1", target.parent / ".sentiment.tmp-young123",
             target.parent / ".sentiment.notes", tmp_path / ".registry.yaml.backup"]  # not ours, or maybe live
    for path in leftovers + young:
        path.mkdir() if "sentiment" in path.name else path.write_text("x")
    for path in leftovers[2:]:  # unlocked for longer than any live writer leaves its fresh staging
        os.utime(path, (time.time() - STALE_AFTER_S - 1,) * 2)
    with atomic_folder(target) as live:  # a concurrent writer's staging: locked, so never removed
        os.utime(live, (time.time() - STALE_AFTER_S - 1,) * 2)
        with atomic_folder(target) as staging:
            (staging / "weights").write_text("first")
        with atomic_file(registry) as staging:
            staging.write_text("new\n")
        assert live.is_dir()
        (live / "weights").write_text("second")
    assert (target / "weights").read_text() == "second" and registry.read_text() == "new\n"
    assert not any(path.exists() for path in leftovers) and all(path.exists() for path in young)


def test_a_training_killed_after_any_step_of_its_write_keeps_a_whole_folder_and_the_retry_cleans_up(
        tmp_path, server, trained_registry, tiny_backbone_dir):
    """`hub train` over an already trained task, killed after each step of writing its folder: the task's folder
    is the old one or the complete new one, never a mix, and the next `hub train` leaves no staging behind."""
    import shutil

    import hub

    original = trained_registry.parent / "adapters" / "sentiment"
    registries = {}
    for step in TRAIN_STEPS:
        folder = tmp_path / step.replace(" ", "_")
        folder.mkdir()
        registries[step] = write_registry(folder, tiny_registry(folder, tiny_backbone_dir))
        shutil.copytree(original, folder / "adapters" / "sentiment")
    train = lambda step: ["train", "sentiment", "-r", str(registries[step]), "--epochs", "1",  # noqa: E731
                          "--max-eval-examples", "8"]
    killed(server, tmp_path / "home", [(step, train(step)) for step in TRAIN_STEPS])

    for step in TRAIN_STEPS:
        store = registries[step].parent / "adapters"
        if step != "folder swapped in":
            assert_complete_or_absent(store / "sentiment", original)  # the old folder, byte for byte
        assert hub.Hub.load(registries[step]).run("sentiment", "good movie")["task"] == "sentiment", step
    assert hidden(registries["adapter saved"].parent / "adapters") != []  # the killed write left its staging
    for step, result in zip(TRAIN_STEPS, hub_cli(server, tmp_path / "home", *(train(step) for step in TRAIN_STEPS))):
        assert result["code"] == 0, (step, result["output"])
        store = registries[step].parent / "adapters"
        assert hidden(store) == [] and sorted(p.name for p in (store / "sentiment").iterdir()) == sorted(
            [*ADAPTER_FILES, "README.md"]), step
