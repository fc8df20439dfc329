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
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from safetensors import safe_open
from torch import nn

from heads import Head, HeadLoadError, load_head
from .backbone import Backbone
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
    try:
        config = json.loads((folder / PEFT_CONFIG).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise AdapterError(f"{folder / PEFT_CONFIG} is not valid JSON ({exc}); retrain or re-download the adapter.") from None
    if config.get("peft_type") != "LORA":
        raise AdapterError(f"{folder}: peft_type {config.get('peft_type')!r} is not served yet; only LORA adapters are.")
    base = config.get("base_model_name_or_path")
    if base != base_model_id:
        raise AdapterError(
            f"{folder}: adapter was trained on {base!r} but the registry's backbone is {base_model_id!r}; "
            "use the matching backbone or retrain the adapter on this one."
        )
    _check_lora_shapes(folder, backbone.model, int(config.get("r", 0)))
    return config


def _check_lora_shapes(folder: Path, model: nn.Module, rank: int) -> None:
    modules = dict(model.named_modules())
    try:
        with safe_open(str(folder / PEFT_WEIGHTS), framework="pt") as weights:
            shapes = {key: tuple(weights.get_slice(key).get_shape()) for key in weights.keys()}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise AdapterError(f"{folder / PEFT_WEIGHTS} is not a readable safetensors file ({exc}); re-download or retrain it.") from None
    if not shapes:
        raise AdapterError(f"{folder / PEFT_WEIGHTS} holds no tensors; retrain the adapter.")
    for key, shape in shapes.items():
        match = re.fullmatch(r"base_model\.model\.(.+)\.lora_([AB])\.weight", key)
        if not match:
            continue
        path, which = match.groups()
        layer = modules.get(path)
        layer = getattr(layer, "base_layer", layer)  # a layer PEFT already wrapped for another adapter
        if not isinstance(layer, nn.Linear):
            raise AdapterError(f"{folder}: tensor {key} targets {path!r}, which is not a linear layer of this backbone.")
        expected = (rank, layer.in_features) if which == "A" else (layer.out_features, rank)
        if shape != expected:
            raise AdapterError(
                f"{folder}: tensor {key} has shape {shape}, this backbone needs {expected}; the adapter was made "
                "for another model size. Retrain it on this backbone."
            )


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
    return head


def attach_adapter(backbone: Backbone, name: str, folder: Path, base_model_id: str) -> None:
    """Load a checked LoRA folder into the backbone's shared PEFT wrapper (created on first use)."""
    from peft import PeftModel  # imported on first use: it costs seconds, and `hub list` never needs it

    with backbone.lock:
        check_adapter_folder(folder, backbone, base_model_id)  # per caller: registries may differ on the id
        if name in backbone.adapters:
            return
        try:
            with warnings.catch_warnings():
                # peft 0.21 still calls transformers 5's deprecated `is_gradient_checkpointing`: not the user's concern.
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                if backbone.peft_model is None:
                    backbone.peft_model = PeftModel.from_pretrained(backbone.model, str(folder), adapter_name=name)
                else:
                    backbone.peft_model.load_adapter(str(folder), adapter_name=name)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise AdapterError(f"PEFT could not load {folder}: {str(exc).splitlines()[0]}; retrain or re-download it.") from None
        backbone.peft_model.requires_grad_(False)
        backbone.peft_model.eval()
        backbone.adapters[name] = str(folder)


def write_adapter_folder(target: Path, write: Callable[[Path], None], check: Callable[[Path], None]) -> None:
    """`write(staging)` fills a temp folder, `check(staging)` must pass, then it replaces `target` atomically."""
    with atomic_folder(target) as staging:
        write(staging)
        check(staging)
