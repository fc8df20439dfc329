"""The adapter store: atomic writes, and checks before an adapter folder is used.

A folder holds PEFT's files (`adapter_config.json`, `adapter_model.safetensors`, readable by plain
`peft.PeftModel.from_pretrained`), the head (`head_config.json`, `head.safetensors`) and a card.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from heads import Head, HeadLoadError, load_head
from .backbone import Backbone
from .batched_lora import (
    LORA_KEY, SAFETENSORS_DTYPES, LoraWeights, SafetensorsHeader, pattern_value, read_lora_weights, read_safetensors_header,
)
from .errors import AdapterError
from .registry import ADAPTER_FILES, TaskSpec

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
UNSAFE_WEIGHTS = ("adapter_model.bin", "head.bin", "pytorch_model.bin")


def folder_bytes(folder: Path) -> int:
    """Bytes on disk of every file in an adapter folder."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _default_permissions(folder: Path) -> None:
    """mkdtemp makes a private folder; give the finished one the usual umask-based modes."""
    umask = _umask()
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


@contextmanager
def atomic_folder(target: Path):
    """Yield a fresh temp folder beside `target`; on success it replaces `target` in one rename.

    If the body raises, the temp folder is removed and `target` is left exactly as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield staging
        _fsync_tree(staging)
        _default_permissions(staging)
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, retired / "folder")
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextmanager
def atomic_file(target: Path):
    """Yield a temp file path beside `target`; when the body succeeds the file is synced and replaces
    `target` in one rename, when it raises the temp file is removed and `target` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)
    staging = Path(name)
    try:
        yield staging
        with open(staging, "rb") as written:
            os.fsync(written.fileno())
        staging.chmod(0o666 & ~_umask())  # mkstemp makes a private file; the result gets the usual mode
        os.replace(staging, target)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def adapter_name(task: str, folder: Path) -> str:
    """A PEFT adapter name unique per (task, folder), so two registries never collide on one backbone."""
    digest = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9_]", "_", task) + "_" + digest


# LoraConfig options that change what LoRA computes beyond x @ A.T @ B.T x scaling: the batched
# serving path (hub.batched_lora) does not apply them, so such folders are refused, never half-served.
UNSERVED_OPTIONS = (
    "use_dora", "lora_bias", "fan_in_fan_out", "use_qalora", "use_bdlora", "alora_invocation_tokens",
    "arrow_config", "layer_replication", "target_parameters", "trainable_token_indices", "modules_to_save",
)


def check_adapter_folder(folder: Path, backbone: Backbone, base_model_id: str) -> dict:
    """Refuse anything that is not a complete, safetensors-only LoRA folder made for this backbone."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AdapterError(f"adapter folder {folder} does not exist; train it with `hub train` or fix the registry's 'adapter'.")
    unsafe = [name for name in UNSAFE_WEIGHTS if (folder / name).exists()]
    missing = [name for name in ADAPTER_FILES if not (folder / name).is_file()]
    if missing:
        extra = f" (found pickled {', '.join(unsafe)}: only safetensors are read)" if unsafe else ""
        raise AdapterError(f"adapter folder {folder} lacks {', '.join(missing)}{extra}; retrain or re-download it.")
    return check_lora(folder, backbone, base_model_id)


def check_lora(folder: Path, backbone: Backbone, base_model_id: str) -> dict:
    """Refuse a PEFT folder whose LoRA the router cannot serve exactly on this backbone; return its config."""
    return _checked_lora(Path(folder), backbone, base_model_id)[0]


def _checked_lora(folder: Path, backbone: Backbone, base_model_id: str) -> tuple[dict, SafetensorsHeader]:
    try:
        config = json.loads((folder / PEFT_CONFIG).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdapterError(f"{folder} has no {PEFT_CONFIG}; it is not a PEFT adapter folder.") from None
    except ValueError as exc:
        raise AdapterError(f"{folder / PEFT_CONFIG} is not valid JSON ({exc}); retrain or re-download the adapter.") from None
    if not isinstance(config, dict):
        raise AdapterError(f"{folder / PEFT_CONFIG} is not a JSON object; retrain or re-download the adapter.")
    if config.get("peft_type") != "LORA":
        raise AdapterError(f"{folder}: peft_type {config.get('peft_type')!r} is not served yet; only LORA adapters are.")
    base = config.get("base_model_name_or_path")
    if base != base_model_id:
        raise AdapterError(
            f"{folder}: adapter was trained on {base!r} but the registry's backbone is {base_model_id!r}; "
            "use the matching backbone or retrain the adapter on this one."
        )
    unserved = [key for key in UNSERVED_OPTIONS if config.get(key)]
    if config.get("bias", "none") != "none":
        unserved.append(f"bias={config['bias']!r}")
    if unserved:
        raise AdapterError(
            f"{folder}: LoRA option(s) {', '.join(unserved)} are not served (the batched router applies plain LoRA "
            "only); retrain without them (`hub train` does) or merge them into the backbone."
        )
    return config, _check_lora_shapes(folder, backbone, config)


def _check_lora_shapes(folder: Path, backbone: Backbone, config: dict) -> SafetensorsHeader:
    try:
        header = read_safetensors_header(folder / PEFT_WEIGHTS)
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{folder / PEFT_WEIGHTS} is not a readable safetensors file ({exc}); re-download or retrain it.") from None
    if not header.tensors:
        raise AdapterError(f"{folder / PEFT_WEIGHTS} holds no tensors; retrain the adapter.")
    halves: dict[str, set[str]] = {}
    for key, entry in header.tensors.items():
        match = LORA_KEY.fullmatch(key)
        if not match:
            raise AdapterError(
                f"{folder}: tensor {key} is not a LoRA matrix of a linear layer (lora_A / lora_B), which is all "
                "the router applies; retrain the adapter with `hub train`."
            )
        path, which = match.groups()
        layer = backbone.lora.target_layer(path)
        if layer is None:
            raise AdapterError(f"{folder}: tensor {key} targets {path!r}, which is not a linear layer of this backbone.")
        rank = int(pattern_value(config.get("rank_pattern") or {}, path, config.get("r", 0)))
        expected = (rank, layer.in_features) if which == "A" else (layer.out_features, rank)
        if entry.shape != expected:
            raise AdapterError(
                f"{folder}: tensor {key} has shape {entry.shape}, this backbone needs {expected}; the adapter was made "
                "for another model size. Retrain it on this backbone."
            )
        if entry.dtype not in SAFETENSORS_DTYPES:
            raise AdapterError(f"{folder}: tensor {key} is stored as {entry.dtype}, not a float type; retrain the adapter.")
        halves.setdefault(path, set()).add(which)
    lonely = sorted(path for path, found in halves.items() if found != {"A", "B"})
    if lonely:
        raise AdapterError(f"{folder}: layer(s) {', '.join(lonely)} have only one of lora_A / lora_B; the file is incomplete. Retrain or re-download it.")
    return header


def load_task_head(folder: Path, task: TaskSpec, backbone: Backbone) -> Head:
    """The task's head from its folder, checked against the backbone width and the registry's labels."""
    try:
        head = load_head(folder)
    except HeadLoadError as exc:
        raise AdapterError(f"{exc}; retrain the task with `hub train {task.name}`.") from None
    layers = backbone.model.config.num_hidden_layers
    if head.config.hidden_size != backbone.hidden_size or (head.needs_all_layers and head.config.num_layers != layers):
        raise AdapterError(
            f"{folder}: head expects hidden size {head.config.hidden_size} and {head.config.num_layers} layers, backbone "
            f"{task.backbone!r} has {backbone.hidden_size} and {layers}; retrain the task on this backbone."
        )
    if head.kind != task.kind or head.config.labels != task.labels:
        raise AdapterError(
            f"{folder}: head is a {head.kind} head with labels {head.config.labels}; registry entry {task.name!r} "
            f"says {task.kind} with {task.labels}. Fix the entry or retrain."
        )
    return head.to(backbone.device)


def load_lora(backbone: Backbone, name: str, folder: Path, base_model_id: str) -> LoraWeights:
    """A checked LoRA folder's matrices, ready for per-row serving on `backbone`.

    Only hooking a layer no earlier adapter used takes the backbone's lock (a pass in flight finishes
    first); the file read and checks run beside passes for other tasks.
    """
    config, header = _checked_lora(Path(folder), backbone, base_model_id)
    try:
        weights = read_lora_weights(name, Path(folder) / PEFT_WEIGHTS, config, backbone.dtype, header).to(backbone.device)
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{folder / PEFT_WEIGHTS} could not be read ({exc}); re-download or retrain it.") from None
    if weights.paths - backbone.lora.hooked_paths:
        with backbone.lock:
            backbone.lora.prepare(weights)
    return weights


def write_adapter_folder(target: Path, write: Callable[[Path], None], check: Callable[[Path], None]) -> None:
    """`write(staging)` fills a temp folder, `check(staging)` must pass, then it replaces `target` atomically."""
    with atomic_folder(target) as staging:
        write(staging)
        check(staging)
