"""Adapters on the Hugging Face Hub: push a task's adapter folder, pull one into the local store and a registry.

Everything goes through `huggingface_hub` as is, so `HF_ENDPOINT`, `HF_TOKEN` and `HF_HUB_OFFLINE` work
as they do for any Hub client. A pull pins the resolved commit, downloads only the adapter's safetensors
and JSON files (the weights in whichever file the repo holds: PEFT's float one, or the int8 one `hub quantize`
writes) and its card, checks every file against the Hub's own hashes (the client itself does not), checks the
base model against the registry's backbones, and then adds the task in two atomic steps (folder, then registry
file), so a failure leaves neither a half-written folder nor a dangling entry. The folder carries a marker
until its entry is written: a retry after a kill between the two steps finishes them.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import HfApi, constants, hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .adapter_folder import AdapterFolder
from .atomic import atomic_file, atomic_folder, discard_folder
from .backbone import load_backbone
from .card import card_for_upload, card_serving_fields
from .errors import AdapterError, RemoteError
from .methods import method_for_peft_type
from .registry import Registry, TaskSpec, load_registry, parse_registry


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The base error of the HTTP library huggingface_hub runs on (httpx2 in 2.x, httpx in 1.x, requests before)."""
    for module, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            return (getattr(importlib.import_module(module), name),)
        except (ImportError, AttributeError):
            continue
    return ()


NETWORK_ERRORS: tuple[type[BaseException], ...] = (HfHubHTTPError, OSError, *_transport_errors())
CARD = AdapterFolder.CARD
PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
INSTALL_MARKER = ".hub-install.json"  # the entry of an install whose folder is in but whose entry may not be yet


@dataclass(frozen=True)
class HubRef:
    """`owner/name[@revision]` as users write it."""

    repo_id: str
    revision: str | None = None

    @classmethod
    def parse(cls, text: str) -> HubRef:
        repo_id, _, revision = text.partition("@")
        try:
            validate_repo_id(repo_id)
        except HFValidationError as exc:
            raise RemoteError(f"{text!r} is not a Hub repo id ({exc}); "
                              "write owner/name or owner/name@revision.") from None
        if "/" not in repo_id:
            raise RemoteError(f"{text!r} has no owner; write owner/name or owner/name@revision.")
        return cls(repo_id, revision or None)

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.revision}" if self.revision else self.repo_id


def push(registry: Registry, task_name: str, repo_id: str, private: bool = False, revision: str | None = None,
         token: str | None = None) -> str:
    """Upload the task's adapter folder (PEFT files, head, card with serving fields); return the commit sha."""
    task = registry.task(task_name)
    folder = registry.adapter_dir(task)
    files = AdapterFolder(folder).files()
    missing = [name for name in (*files, CARD) if not (folder / name).is_file()]
    if missing:
        raise AdapterError(f"{folder} lacks {', '.join(missing)}; train the task first with `hub train {task.name}`.")
    ref = HubRef.parse(repo_id)
    api = HfApi(token=token)
    # the other weights file of an earlier push would make the repo ambiguous: the commit deletes it
    replaced = [name for name in AdapterFolder.WEIGHTS_FILES if name not in files]
    with tempfile.TemporaryDirectory(prefix="hub-push-") as staging:
        for name in files:
            shutil.copy2(folder / name, Path(staging) / name)
        (Path(staging) / CARD).write_text(card_for_upload(folder / CARD, task), encoding="utf-8")
        try:
            api.create_repo(ref.repo_id, private=private, exist_ok=True)
            if revision:
                api.create_branch(ref.repo_id, branch=revision, exist_ok=True)
            commit = api.upload_folder(
                folder_path=staging, repo_id=ref.repo_id, revision=revision, delete_patterns=replaced,
                commit_message=f"{task.name}: {_method_title(folder)} adapter + {task.kind} head (bert-adapter-hub)")
        except NETWORK_ERRORS as exc:
            raise RemoteError(f"pushing {task.name!r} to {ref.repo_id}: {_first_line(exc)}; {_auth_hint()}") from None
    return commit.oid


def pull(registry_path: str | Path, ref_text: str, as_task: str | None = None, token: str | None = None) -> TaskSpec:
    """Download a Hub adapter into the registry's adapter store and add its task entry; return the entry."""
    registry = load_registry(registry_path, strict_adapters=False)
    ref = HubRef.parse(ref_text)
    name = as_task or ref.repo_id.split("/")[1]
    ensure_new_task(registry, name)
    files, commit = verified_download(ref, token)
    fields = card_serving_fields(files[CARD].parent)  # the snapshot folder of the pinned commit
    if not fields.get("kind"):
        raise RemoteError(f"{ref}: its card has no bert-adapter-hub task fields (kind, labels, inputs, metric); "
                          "push it with this project's `hub push`, which writes them.")
    backbone = backbone_for(registry, files[AdapterFolder.PEFT_CONFIG], ref)
    entry = {"name": name, "backbone": backbone, **fields, "adapter": f"adapters/{name}",
             "hub": f"{ref.repo_id}@{commit}"}
    return install_task(registry, entry, lambda staging: _copy_files(files, staging))


def ensure_new_task(registry: Registry, name: str) -> None:
    """Refuse a task name the registry already has (checked before anything is downloaded or converted), unless
    its folder still holds an install marker: a kill may have cut that install short, and `install_task` decides."""
    task = next((t for t in registry.tasks if t.name == name), None)
    if task is not None and not (registry.adapter_dir(task) / INSTALL_MARKER).is_file():
        raise _name_taken(registry, name)


def _name_taken(registry: Registry, name: str) -> RemoteError:
    return RemoteError(f"{registry.path} already has a task {name!r}; pass --as NEW_NAME or remove that entry first.")


def install_task(registry: Registry, entry: dict[str, Any], write: Callable[[Path], None]) -> TaskSpec:
    """Add a task in two atomic steps: its adapter folder (filled by `write`, then checked against the backbone
    and the entry), then its entry at the end of the registry file; a failure leaves neither behind.

    Until the entry is in, the folder holds INSTALL_MARKER, so a retry after a kill can tell an unfinished
    install's folder (discarded, then written afresh) from the user's (refused), and finds an install of this
    same entry whose entry was already written done.
    """
    target = registry.resolve(entry["adapter"])
    marker = target / INSTALL_MARKER
    if any(t.name == entry["name"] for t in registry.tasks):
        return _finished_install(registry, entry, marker)
    if marker.is_file():
        discard_folder(target)
    elif target.exists():
        raise RemoteError(f"{target} already exists; pass --as NEW_NAME or move that folder away first.")
    task = validated_entry(registry, entry)
    spec = registry.backbone(task.backbone)
    backbone = load_backbone(spec, registry)
    with atomic_folder(target) as staging:
        write(staging)
        AdapterFolder(staging).load(task, backbone, spec.model_id)  # everything serving checks, before the swap
        (staging / INSTALL_MARKER).write_text(_marker_text(entry), encoding="utf-8")
    try:
        append_task(registry.path, entry)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)  # the folder is ours (it did not exist): no task half-added
        raise
    marker.unlink()
    return task


def _finished_install(registry: Registry, entry: dict[str, Any], marker: Path) -> TaskSpec:
    """The task of an install of this very entry killed after writing it (only its marker was left to remove);
    any other install under a name the registry has is refused."""
    task = registry.task(entry["name"])
    if not _marked_with(marker, entry) or validated_entry(registry, entry) != task:
        raise _name_taken(registry, task.name)
    marker.unlink()
    return task


def _marker_text(entry: dict[str, Any]) -> str:
    return json.dumps(entry, sort_keys=True, default=str)


def _marked_with(marker: Path, entry: dict[str, Any]) -> bool:
    """Whether `marker` records this very entry (same name, source, commit and serving fields)."""
    try:
        return marker.read_text(encoding="utf-8") == _marker_text(entry)
    except OSError:
        return False


def _copy_files(files: dict[str, Path], folder: Path) -> None:
    for filename, path in files.items():
        shutil.copyfile(path, folder / filename)


def fetch(registry: Registry, task: TaskSpec, token: str | None = None) -> Path:
    """Download the Hub adapter a registry entry names (`hub: owner/name@revision`) into the task's adapter
    folder, on first use. Offline (`HF_HUB_OFFLINE=1`), files come from the local Hugging Face cache."""
    ref = HubRef.parse(task.hub or "")
    files = _cached_files(ref, token) if constants.HF_HUB_OFFLINE else verified_download(ref, token)[0]
    target = registry.adapter_dir(task)
    with atomic_folder(target) as staging:
        _copy_files(files, staging)
    return target


def _cached_files(ref: HubRef, token: str | None) -> dict[str, Path]:
    """The adapter files of `ref` from the local cache (hash-checked when they were downloaded)."""
    cached = [name for name in AdapterFolder.WEIGHTS_FILES
              if isinstance(try_to_load_from_cache(ref.repo_id, name, revision=ref.revision), str)]
    try:
        return {name: Path(hf_hub_download(ref.repo_id, name, revision=ref.revision, token=token))
                for name in (*AdapterFolder.files_among(cached, ref), CARD)}
    except NETWORK_ERRORS:
        raise RemoteError(f"{ref} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                          "fetch it once online (or unset HF_HUB_OFFLINE).") from None


def verified_download(ref: HubRef, token: str | None,
                      names: tuple[str, ...] | None = None) -> tuple[dict[str, Path], str]:
    """Files `names` of `ref` at one pinned commit, each checked against the Hub's sha256 / git blob id. By default
    an adapter folder's files (with whichever weights file the repo holds) and its card."""
    api = HfApi(token=token)
    try:
        info = api.model_info(ref.repo_id, revision=ref.revision, files_metadata=True)
    except RepositoryNotFoundError:
        raise RemoteError(f"{ref.repo_id} was not found on {api.endpoint} (or it is private); "
                          f"check the name, {_auth_hint()}") from None
    except RevisionNotFoundError:
        raise RemoteError(f"{ref.repo_id} has no revision {ref.revision!r}; "
                          "use a branch, tag or commit sha that exists.") from None
    except NETWORK_ERRORS as exc:
        raise RemoteError(f"reading {ref} from {api.endpoint}: {_first_line(exc)}") from None
    assert info.sha is not None  # the Hub always names the commit a revision resolves to
    siblings = {s.rfilename: s for s in info.siblings or []}
    if names is None:
        try:
            names = (*AdapterFolder.files_among(siblings, ref), CARD)
        except AdapterError as exc:
            raise RemoteError(str(exc)) from None
    missing = [name for name in names if name not in siblings]
    if missing:
        pickled = sorted(n for n in siblings if n.endswith(PICKLED_SUFFIXES))
        why = (f"; it has pickled weights ({', '.join(pickled)}), which are never loaded: only safetensors are"
               if pickled else "")
        raise RemoteError(f"{ref} lacks {', '.join(missing)}{why}. `hub pull` takes what `hub push` uploads; "
                          "`hub import-peft` takes plain PEFT adapters.")
    files = {}
    for name in names:
        try:
            path = Path(hf_hub_download(ref.repo_id, name, revision=info.sha, token=token))
        except NETWORK_ERRORS as exc:
            raise RemoteError(f"downloading {name} from {ref} was interrupted ({_first_line(exc)}); "
                              "run the pull again: nothing was added.") from None
        _check_hash(path, siblings[name], ref)
        files[name] = path
    return files, info.sha


def _check_hash(path: Path, sibling: Any, ref: HubRef) -> None:
    """Compare a downloaded file with the Hub's hash: sha256 for LFS files, the git blob sha1 otherwise."""
    data = path.read_bytes()
    if sibling.lfs is not None:
        expected, actual, kind = sibling.lfs.sha256, hashlib.sha256(data).hexdigest(), "sha256"
    else:
        expected, actual, kind = (sibling.blob_id, hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest(),
                                  "git blob id")
    if expected != actual:
        _evict(path)
        raise RemoteError(f"{sibling.rfilename} from {ref} does not match the Hub's {kind} "
                          f"({actual[:12]} != {expected[:12]}); "
                          "the corrupt copy was removed from the cache; run the pull again.")


def _evict(path: Path) -> None:
    """Remove a cached file and the blob it links to, so the next pull downloads it afresh."""
    blob = path.resolve()
    path.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)


def backbone_for(registry: Registry, adapter_config: Path, ref: HubRef | str) -> str:
    """The registry backbone whose id is the adapter's `base_model_name_or_path`."""
    base = yaml.safe_load(adapter_config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    for backbone in registry.backbones:
        if backbone.model_id == base:
            return backbone.name
    known = ", ".join(f"{b.name} = {b.model_id}" for b in registry.backbones)
    raise RemoteError(f"{ref} was trained on {base!r}; this registry's backbones are {known}. "
                      "Add a backbone with that id to the registry, or pull an adapter made for one of these.")


def validated_entry(registry: Registry, entry: dict[str, Any]) -> TaskSpec:
    """The entry as the registry would read it (schema errors name the pulled repo's fields)."""
    raw = {"backbones": [b.model_dump(exclude_none=True) for b in registry.backbones], "tasks": [entry]}
    checked = parse_registry(raw, registry.path)
    return checked.tasks[0]


def append_task(registry_file: Path, entry: dict[str, Any]) -> None:
    """Add a task at the end of the registry file (comments and layout above it untouched), atomically,
    and only if the whole file still validates."""
    text = registry_file.read_text(encoding="utf-8")
    header = re.search(r"^tasks:[ \t]*(\[\])?[ \t]*(#.*)?$", text, flags=re.M)
    body = text[header.end():] if header else ""
    if header is not None and re.search(r"^[A-Za-z_]", body, flags=re.M):
        raise RemoteError(f"{registry_file}: 'tasks' is not the last section; "
                          "move it to the end so `hub pull` can append to it.")
    items = re.search(r"^([ \t]*)- ", body, flags=re.M)
    indent = items.group(1) if items else "  "  # the file's own list indentation
    head = text[: header.start()] if header else text.rstrip("\n") + "\n\n"
    block = yaml.safe_dump([entry], sort_keys=False, allow_unicode=True, width=120, default_flow_style=None)
    text = (head + "tasks:" + body).rstrip("\n") + "\n\n" + "".join(f"{indent}{line}\n" for line in block.splitlines())
    with atomic_file(registry_file) as staging:
        staging.write_text(text, encoding="utf-8")
        # a broken result never replaces the user's registry (another task's broken folder is not this one's concern)
        problem = load_registry(staging, strict_adapters=False).adapter_problems.get(entry["name"])
        if problem:
            raise RemoteError(problem)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _auth_hint() -> str:
    return "and for private or write access log in (`hf auth login`) or set HF_TOKEN"


def _method_title(folder: Path) -> str:
    """How the folder's adapter method is named ("LoRA", "(IA)3", ...), from its adapter_config.json."""
    adapter = AdapterFolder(folder)
    return method_for_peft_type(adapter.adapter_config().get("peft_type"), folder).title
