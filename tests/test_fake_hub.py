"""The real `huggingface_hub` client against `FakeHub`.

`huggingface_hub` reads `HF_ENDPOINT` (and `HF_HUB_OFFLINE`, `HF_HUB_DISABLE_XET`) at import time, so every
client call runs in a fresh subprocess whose script prints one JSON line back.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import urllib.request
from pathlib import Path
from textwrap import dedent

import pytest
from fake_hub import DEFAULT_TOKENS, FakeHub

OWNER_TOKEN = "hf_test_token"
OTHER_TOKEN = "hf_other_token"
CHUNK = 10 * 1024 * 1024  # huggingface_hub.constants.DOWNLOAD_CHUNK_SIZE

PRELUDE = """
import hashlib, json, os, sys
from pathlib import Path
from huggingface_hub import HfApi, hf_hub_download, hf_hub_url, get_hf_file_metadata, snapshot_download
ARGS = json.loads(sys.argv[1])
api = HfApi(token=ARGS.get("token", False))

def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()

def tree(folder):
    return {p.relative_to(folder).as_posix(): sha256(p) for p in sorted(Path(folder).rglob("*")) if p.is_file()}

def error(call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except Exception as exc:
        return [type(exc).__name__, getattr(getattr(exc, "response", None), "status_code", None)]
    return None
"""

UPLOAD = """
repo_id = api.create_repo(ARGS["name"], private=ARGS.get("private", False)).repo_id
first = api.upload_folder(repo_id=repo_id, folder_path=ARGS["folder"]).oid
"""


@pytest.fixture
def hub():
    with FakeHub(tokens={**DEFAULT_TOKENS, OTHER_TOKEN: "intruder"}) as server:
        yield server


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A small model folder: a config, a ~100 KB binary weights file and a model card."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"hidden_size": 32}))
    (folder / "model.safetensors").write_bytes(random.Random(0).randbytes(100_000))
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# Tiny model\n")
    return folder


def run_client(hub: FakeHub, tmp_path: Path, code: str, *, upload: bool = False, xet: bool = False,
               offline: bool = False, **args: object) -> dict:
    """Run `code` with the real client pointed at `hub`; return the JSON it prints last.

    `code` runs after PRELUDE and, with `upload`, after UPLOAD (which defines `repo_id` and `first`).
    """
    env = {
        "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1",
        "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_XET": "0" if xet else "1", "HF_HUB_OFFLINE": "1" if offline else "0",
    }
    script = PRELUDE + (UPLOAD if upload else "") + dedent(code)
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(args)], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def local_tree(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


@pytest.mark.parametrize("xet", [False, True], ids=["xet-disabled", "xet-installed"])
def test_upload_folder_then_snapshot_download_roundtrip(hub, tmp_path, model_dir, xet):
    out = run_client(hub, tmp_path, """
        print(json.dumps({
            "repo_id": repo_id, "first": first, "sha": api.model_info(repo_id).sha,
            "files": tree(snapshot_download(repo_id, cache_dir=ARGS["cache"])),
            "again": error(api.create_repo, ARGS["name"], exist_ok=True),
            "conflict": error(api.create_repo, ARGS["name"]),
        }))
    """, upload=True, xet=xet, token=OWNER_TOKEN, name="demo", folder=str(model_dir), cache=str(tmp_path / "fresh"))
    assert out["repo_id"] == "tester/demo" and out["sha"] == out["first"]
    files = out["files"]
    assert files.pop(".gitattributes")  # the Hub's initial commit
    assert files == local_tree(model_dir)
    assert out["again"] is None and out["conflict"] == ["HfHubHTTPError", 409]
    assert ("POST", "/api/models/tester/demo/commit/main") in hub.request_log
    assert not any("xet" in path for _, path in hub.request_log)


def test_revision_pins_commit_and_branches(hub, tmp_path, model_dir):
    out = run_client(hub, tmp_path, """
        config = lambda **kw: Path(hf_hub_download(repo_id, "config.json", **kw)).read_text()
        second = api.upload_file(repo_id=repo_id, path_in_repo="config.json", path_or_fileobj=b'{"v": 2}').oid
        pinned = Path(snapshot_download(repo_id, revision=first)) / "config.json"
        api.create_branch(repo_id, branch="dev")
        api.upload_file(repo_id=repo_id, path_in_repo="config.json", path_or_fileobj=b'{"v": 3}', revision="dev")
        print(json.dumps({
            "first": first, "second": second, "pinned": pinned.read_text(), "main": config(),
            "dev": config(revision="dev"), "first_sha": api.model_info(repo_id, revision=first).sha,
            "missing_branch": error(api.upload_file, repo_id=repo_id, path_in_repo="x", path_or_fileobj=b"x",
                                    revision="nope"),
            "missing_commit": error(hf_hub_download, repo_id, "config.json", revision="f" * 40),
            "missing_file": error(hf_hub_download, repo_id, "missing.txt"),
        }))
    """, upload=True, token=OWNER_TOKEN, name="pin", folder=str(model_dir))
    assert out["first"] != out["second"] and out["first_sha"] == out["first"]
    assert out["pinned"] == (model_dir / "config.json").read_text()
    assert (out["main"], out["dev"]) == ('{"v": 2}', '{"v": 3}')
    assert out["missing_branch"] == ["RevisionNotFoundError", 404]
    assert out["missing_commit"] == ["RevisionNotFoundError", 404]
    assert out["missing_file"] == ["RemoteEntryNotFoundError", 404]


def test_private_repo_needs_the_owner_token(hub, tmp_path, model_dir):
    out = run_client(hub, tmp_path, """
        anonymous, intruder = HfApi(token=False), HfApi(token=ARGS["other"])
        print(json.dumps({
            "anonymous_snapshot": error(snapshot_download, repo_id, token=False, cache_dir=ARGS["cache"]),
            "anonymous_file": error(hf_hub_download, repo_id, "config.json", token=False, cache_dir=ARGS["cache"]),
            "intruder_info": error(intruder.model_info, repo_id),
            "anonymous_exists": anonymous.repo_exists(repo_id),
            "owner": tree(snapshot_download(repo_id, token=ARGS["token"], cache_dir=ARGS["cache"])),
        }))
    """, upload=True, token=OWNER_TOKEN, other=OTHER_TOKEN, name="secret", private=True, folder=str(model_dir),
        cache=str(tmp_path / "cache"))
    assert out["anonymous_snapshot"] == ["RepositoryNotFoundError", 401]
    assert out["anonymous_file"] == ["RepositoryNotFoundError", 401]
    assert out["intruder_info"] == ["RepositoryNotFoundError", 404]
    assert out["anonymous_exists"] is False
    assert out["owner"]["model.safetensors"] == local_tree(model_dir)["model.safetensors"]


def test_push_without_a_valid_token_fails(hub, tmp_path):
    out = run_client(hub, tmp_path, """
        repo_id = HfApi(token=ARGS["owner"]).create_repo("public").repo_id
        push = lambda token: error(HfApi(token=token).upload_file, repo_id=repo_id, path_in_repo="a.txt",
                                   path_or_fileobj=b"a")
        print(json.dumps({
            "create": error(api.create_repo, "anonymous"), "anonymous": push(False),
            "intruder": push(ARGS["other"]), "bogus": push("hf_bogus"),
            "whoami": HfApi(token=ARGS["owner"]).whoami()["name"], "bogus_whoami": error(api.whoami, "hf_bogus"),
            "files": HfApi(token=False).list_repo_files(repo_id),
        }))
    """, owner=OWNER_TOKEN, other=OTHER_TOKEN)
    assert out["create"] == ["HfHubHTTPError", 401]
    assert out["anonymous"] == ["RepositoryNotFoundError", 401]  # the client's reading of a 401 on a repo API
    assert out["intruder"] == ["HfHubHTTPError", 403]
    assert out["bogus"] == ["HfHubHTTPError", 401]
    assert (out["whoami"], out["bogus_whoami"]) == ("tester", ["HfHubHTTPError", 401])
    assert out["files"] == [".gitattributes"]


def test_corrupted_download_differs_from_advertised_sha256(hub, tmp_path, model_dir):
    hub.corrupt("tester/corrupt", "model.safetensors")
    out = run_client(hub, tmp_path, """
        name = "model.safetensors"
        cache = ARGS["cache"]
        tree_entry = next(f for f in api.list_repo_tree(repo_id, expand=True) if f.path == name)
        sibling = next(s for s in api.model_info(repo_id, files_metadata=True).siblings if s.rfilename == name)
        downloaded = Path(snapshot_download(repo_id, cache_dir=cache)) / name
        report = api.verify_repo_checksums(repo_id, cache_dir=cache)
        print(json.dumps({
            "tree": tree_entry.lfs.sha256, "paths_info": api.get_paths_info(repo_id, [name])[0].lfs.sha256,
            "sibling": sibling.lfs.sha256, "etag": get_hf_file_metadata(hf_hub_url(repo_id, name)).etag,
            "downloaded": sha256(downloaded), "size": downloaded.stat().st_size,
            "config_lfs": api.get_paths_info(repo_id, ["config.json"])[0].lfs,
            "mismatches": report.mismatches, "checked": report.checked_count,
        }))
    """, upload=True, token=OWNER_TOKEN, name="corrupt", folder=str(model_dir), cache=str(tmp_path / "cache"))
    original = local_tree(model_dir)["model.safetensors"]
    assert out["tree"] == out["paths_info"] == out["sibling"] == out["etag"] == original
    assert out["downloaded"] != original and out["size"] == 100_000
    assert out["config_lfs"] is None  # small text files carry only their git blob sha1, as on the Hub
    assert out["checked"] == 4
    assert [(m["path"], m["expected"], m["algorithm"]) for m in out["mismatches"]] == [
        ("model.safetensors", original, "sha256")]


def test_interrupted_download_resumes_with_range(hub, tmp_path):
    """The client reads 10 MiB chunks: a drop after the first chunk makes it resume with `Range: bytes=10485760-`."""
    folder = tmp_path / "big"
    folder.mkdir()
    data = random.Random(1).randbytes(CHUNK + 10_000)
    (folder / "big.bin").write_bytes(data)
    hub.fail_after_bytes("tester/flaky", "big.bin", CHUNK + 1000)
    out = run_client(hub, tmp_path, """
        print(json.dumps({"sha": sha256(hf_hub_download(repo_id, "big.bin", cache_dir=ARGS["cache"]))}))
    """, upload=True, token=OWNER_TOKEN, name="flaky", folder=str(folder), cache=str(tmp_path / "cache"))
    assert out["sha"] == hashlib.sha256(data).hexdigest()
    gets = [path for method, path in hub.request_log if method == "GET" and path.endswith("/big.bin")]
    assert len(gets) == 2
    ranged = urllib.request.Request(f"{hub.endpoint}/tester/flaky/resolve/main/big.bin",
                                    headers={"Range": f"bytes={CHUNK}-"})
    with urllib.request.urlopen(ranged) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes {CHUNK}-{len(data) - 1}/{len(data)}"
        assert response.read() == data[CHUNK:]


def test_offline_snapshot_is_served_from_cache_without_requests(hub, tmp_path, model_dir):
    online = run_client(hub, tmp_path, """
        print(json.dumps({"path": snapshot_download(repo_id)}))
    """, upload=True, token=OWNER_TOKEN, name="offline", folder=str(model_dir))
    seen = len(hub.request_log)
    offline = run_client(hub, tmp_path, """
        path = snapshot_download("tester/offline")
        print(json.dumps({"path": path, "files": tree(path)}))
    """, offline=True)
    assert offline["path"] == online["path"]
    assert {k: v for k, v in offline["files"].items() if k != ".gitattributes"} == local_tree(model_dir)
    assert len(hub.request_log) == seen


def test_tree_pagination_nested_paths_and_deletion(hub, tmp_path, model_dir):
    (model_dir / "sub" / "deeper").mkdir(parents=True)
    (model_dir / "sub" / "a.txt").write_text("a")
    (model_dir / "sub" / "deeper" / "b.txt").write_text("b")
    hub.tree_page_size = 2
    out = run_client(hub, tmp_path, """
        api.delete_file("sub/a.txt", repo_id=repo_id)
        top = {f.path: type(f).__name__ for f in api.list_repo_tree(repo_id)}
        sub = [f.path for f in api.list_repo_tree(repo_id, "sub", expand=True)]
        folder = api.get_paths_info(repo_id, ["sub/deeper"], expand=True)[0]
        print(json.dumps({"files": sorted(api.list_repo_files(repo_id)), "top": top, "sub": sub,
                          "folder_commit": folder.last_commit.oid, "first": first}))
    """, upload=True, token=OWNER_TOKEN, name="nested", folder=str(model_dir))
    assert out["files"] == sorted([".gitattributes", "README.md", "config.json", "model.safetensors",
                                   "sub/deeper/b.txt"])
    assert out["top"]["sub"] == "RepoFolder" and out["top"]["config.json"] == "RepoFile"
    assert out["sub"] == ["sub/deeper"]
    assert out["folder_commit"] == out["first"]
    tree_pages = [path for _, path in hub.request_log if "/tree/" in path]
    assert len(tree_pages) > 3
