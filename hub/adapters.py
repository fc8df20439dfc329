"""The adapter store: atomic writes, and checks before an adapter folder is used.

A folder holds PEFT's files (`adapter_config.json`, `adapter_model.safetensors`, readable by plain
`peft.PeftModel.from_pretrained`), the head (`head_config.json`, `head.safetensors`) and a card.

An atomic write stages beside its target (`.<name>.tmp-<pid>-XXXX`) and holds an advisory lock on what it
stages, so the next write to the same target can tell what a killed writer left (its process is gone, or
nothing has held it for minutes) from a live writer's work, and removes only the former.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import torch

from heads import Head, HeadLoadError, load_head
from heads.base import WEIGHTS_FILE as HEAD_WEIGHTS
from .backbone import Backbone
from .batched_lora import (
    LORA_KEY, SAFETENSORS_DTYPES, LoraWeights, SafetensorsHeader, pattern_value, read_lora_weights, read_safetensors_header,
)
from .errors import AdapterError
from .registry import ADAPTER_FILES, TaskSpec

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, so a dead writer's staging cannot be told from a live one's
    fcntl = None

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
UNSAFE_WEIGHTS = ("adapter_model.bin", "head.bin", "pytorch_model.bin")
STALE_AFTER_S = 300  # unlocked this long, a staging item is an orphan even if a process of its pid runs (pid reused)
AT_FDCWD, RENAME_EXCHANGE = -100, 2  # <fcntl.h>, <linux/fs.h>


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
def _staged(target: Path, kind: str, folder: bool) -> Iterator[Path]:
    """A fresh temp folder or file beside `target`, named with this pid and locked while the block runs (the
    kernel drops the lock when the process dies, however it dies); the block decides what becomes of it."""
    prefix = f".{target.name}.{kind}-{os.getpid()}-"
    if folder:
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    else:
        handle, name = tempfile.mkstemp(prefix=prefix, dir=target.parent)
        os.close(handle)
        path = Path(name)
    if fcntl is None:
        yield path
        return
    handle = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield path
    finally:
        os.close(handle)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's process
        pass
    return True


def _orphaned(path: Path, pid: str | None) -> bool:
    """Whether no live writer can still be creating `path`: its process is gone or it is minutes old."""
    if pid is not None and not _alive(int(pid)):
        return True
    try:
        return time.time() - path.lstat().st_mtime > STALE_AFTER_S
    except FileNotFoundError:
        return False


def clean_stale(target: Path) -> None:
    """Remove the staging items killed atomic writes to `target` left beside it; never a live writer's (it holds
    the lock). If a kill fell between moving the old folder aside and the new one in, the old one goes back."""
    if fcntl is None:
        return
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(tmp|old)-(?:(\d+)-)?[A-Za-z0-9_]+")
    for path in sorted(target.parent.iterdir()):
        match = pattern.fullmatch(path.name)
        if match and _orphaned(path, match.group(2)):
            _remove_orphan(path, target, retired=match.group(1) == "old")


def _remove_orphan(path: Path, target: Path, retired: bool) -> None:
    """Delete `path` unless a live writer holds its lock (first putting back an old folder a kill left aside)."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return  # another cleaner was first
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if retired and (path / "folder").is_dir() and not target.exists():
            os.replace(path / "folder", target)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except BlockingIOError:
        pass  # a live writer holds it
    finally:
        os.close(handle)


@functools.cache
def _renameat2() -> Callable[..., int] | None:
    """Linux's renameat2 from the C library, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    function = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return function


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one atomic step; False where the OS or the file system cannot."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def _swap_in(staging: Path, target: Path) -> None:
    """Put the finished `staging` at `target`: one rename, one exchange, or where the OS has no exchange
    two renames (target aside, staging in; clean_stale undoes a kill between them)."""
    if not target.exists():
        os.replace(staging, target)
    elif _exchange(staging, target):
        shutil.rmtree(staging, ignore_errors=True)  # the old folder now
    else:
        with _staged(target, "old", folder=True) as retired:
            os.replace(target, retired / "folder")
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)


def discard_folder(target: Path) -> None:
    """Remove `target` by one rename into a staging folder, then delete that: a kill never leaves it half removed."""
    with _staged(target, "tmp", folder=True) as trash:
        os.replace(target, trash / target.name)
        shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def _atomic(target: Path, folder: bool, finish: Callable[[Path, Path], None]) -> Iterator[Path]:
    """The one life of an atomic write: clean what killed writes to `target` left, stage beside it, let the
    body fill the staging item, `finish(staging, target)` puts it in place; on any failure it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target)
    with _staged(target, "tmp", folder=folder) as staging:
        try:
            yield staging
            finish(staging, target)
        except BaseException:
            if folder:
                shutil.rmtree(staging, ignore_errors=True)
            else:
                staging.unlink(missing_ok=True)
            raise


def _finish_folder(staging: Path, target: Path) -> None:
    _fsync_tree(staging)
    _default_permissions(staging)
    _swap_in(staging, target)


def _finish_file(staging: Path, target: Path) -> None:
    with open(staging, "rb") as written:
        os.fsync(written.fileno())
    staging.chmod(0o666 & ~_umask())  # mkstemp makes a private file; the result gets the usual mode
    os.replace(staging, target)


def atomic_folder(target: Path) -> AbstractContextManager[Path]:
    """Yield a fresh temp folder beside `target`; on success it replaces `target` in one step.

    If the body raises, the temp folder is removed and `target` is left exactly as it was; what killed
    writes to `target` left beside it is removed first (`clean_stale`).
    """
    return _atomic(target, folder=True, finish=_finish_folder)


def atomic_file(target: Path) -> AbstractContextManager[Path]:
    """Yield a temp file path beside `target`; when the body succeeds the file is synced and replaces
    `target` in one rename, when it raises the temp file is removed and `target` is left as it was.
    What killed writes to `target` left beside it is removed first (`clean_stale`)."""
    return _atomic(target, folder=False, finish=_finish_file)


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
    _refuse_non_finite(Path(folder) / HEAD_WEIGHTS, head.state_dict())
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
        weights = read_lora_weights(name, Path(folder) / PEFT_WEIGHTS, config, backbone.dtype, header)
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{folder / PEFT_WEIGHTS} could not be read ({exc}); re-download or retrain it.") from None
    if not torch.isfinite(weights.buffer).all():  # one check over the adapter's single buffer
        _refuse_non_finite(Path(folder) / PEFT_WEIGHTS, _lora_matrices(weights))
    weights = weights.to(backbone.device)
    if weights.paths - backbone.lora.hooked_paths:
        with backbone.lock:
            backbone.lora.prepare(weights)
    return weights


def _refuse_non_finite(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """NaN or inf weights would be served as `score: nan`: refuse the file, naming the first such tensor."""
    for key, tensor in tensors.items():
        finite = torch.isfinite(tensor)
        if not finite.all():
            raise AdapterError(f"{path}: tensor {key} holds {finite.numel() - int(finite.sum())} NaN/inf values; "
                               "retrain or re-download the adapter.")


def _lora_matrices(weights: LoraWeights) -> dict[str, torch.Tensor]:
    """The adapter's matrices by their PEFT tensor names (B with its scaling, as served)."""
    return {f"base_model.model.{path}.lora_{which}.weight": matrix for path in weights.paths
            for which, matrix in (("A", weights.down(path)), ("B", weights.up(path)))}


def write_adapter_folder(target: Path, write: Callable[[Path], None], check: Callable[[Path], None]) -> None:
    """`write(staging)` fills a temp folder, `check(staging)` must pass, then it replaces `target` atomically."""
    with atomic_folder(target) as staging:
        write(staging)
        check(staging)
