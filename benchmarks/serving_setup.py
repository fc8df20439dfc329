"""What the serving benchmarks share: many task adapters on the embedded English backbone, and request
texts from real GLUE dev sets.

The adapters are written as real adapter folders (what `hub train` saves for the method, plus a
classification head) with random weights: throughput, loading and memory do not depend on what the
weights learned, and a thousand trained adapters would take days on this CPU. LoRA's shape is chosen by
`targets`: "qv" is PEFT's default for BERT (query + value), "all" is what `hub train` ships (every
linear layer but the pooler). Any other registered method (`hub.methods.METHODS`) is written by its own
training code with the options given; "mix" gives task i the i-th method, cycling through every one.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterable
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file

import hub
from heads import KINDS, Head
from hub.backbone import Backbone, load_backbone
from hub.data import load_split
from hub.methods import METHODS
from hub.registry import BackboneSpec, load_registry

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TARGETS = {"qv": ["query", "value"], "all": ["query", "key", "value", "dense"]}
LABELS = ["negative", "positive"]
MIX = "mix"  # the method name for a registry mixing every registered method
NOISE = 0.1  # std of the noise added to a fresh adapter's parameters (as tests/test_method_conformance.py does)

WriteFolder = Callable[[Path, int], None]  # (folder, seed) -> writes the adapter folder, head included


def english_entry(source: str | None = None) -> dict:
    """The shipped registry's English backbone entry; `source` (a model folder or Hub id) replaces its weights."""
    registry = load_registry(hub.default_registry_path())
    spec = registry.backbone("en")
    entry = spec.model_dump(exclude_none=True)
    if source:
        entry = {**{k: v for k, v in entry.items() if k not in ("id", "revision")}, "source": source}
    if not entry["source"].startswith("pkg:") and registry.resolve(entry["source"]).exists():
        entry["source"] = str(registry.resolve(entry["source"]))  # a relative folder must work from a temp registry too
    return entry


def english_backbone(source: str | None = None, device: torch.device = torch.device("cpu")) -> tuple[Backbone, dict]:
    """The English backbone (shared in this process) on `device`, and its registry entry (see english_entry)."""
    entry = english_entry(source)
    return load_backbone(BackboneSpec(**entry), device=device), entry


def target_paths(model: torch.nn.Module, targets: str) -> list[str]:
    """The linear layers PEFT would wrap for `targets` (the pooler excluded, as `hub train` does)."""
    names = TARGETS[targets]
    return [path for path, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and path.rsplit(".", 1)[-1] in names and not path.startswith("pooler")]


def lora_config(model_id: str, targets: str, rank: int) -> dict:
    """adapter_config.json as PEFT writes it for these options."""
    from peft import LoraConfig

    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS[targets], exclude_modules=["pooler.dense"])
    config.base_model_name_or_path = model_id
    return json.loads(json.dumps(config.to_dict(), default=sorted))  # sets -> lists, as save_pretrained does


def write_head(folder: Path, backbone: Backbone, seed: int) -> None:
    torch.manual_seed(seed)
    KINDS["classification"].head.from_options({}, backbone.hidden_size, LABELS, backbone.model.config.num_hidden_layers).save(folder)


def write_adapter(folder: Path, backbone: Backbone, paths: list[str], config: dict, seed: int) -> None:
    """One adapter folder: random LoRA matrices (B non-zero, so every update is real work) + a head."""
    generator = torch.Generator().manual_seed(seed)
    rank = config["r"]
    tensors = {}
    for path in paths:
        layer = backbone.model.get_submodule(path)
        tensors[f"base_model.model.{path}.lora_A.weight"] = torch.randn(rank, layer.in_features, generator=generator) / layer.in_features ** 0.5
        tensors[f"base_model.model.{path}.lora_B.weight"] = torch.randn(layer.out_features, rank, generator=generator) * 0.01
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    write_head(folder, backbone, seed)


class MethodWriter:
    """Folders of one registered method, written by its own training code: injected once into a fresh copy of the
    backbone's model (on the first folder written), then per folder its trainable parameters redrawn from the
    folder's seed and saved (loading a model per folder would take most of a 1,000-folder run)."""

    def __init__(self, method: str, options: dict[str, Any], backbone: Backbone, model_id: str):
        self.method, self.backbone, self.model_id = METHODS[method], backbone, model_id
        self.options = self.method.options(method=method, **options)

    @cached_property
    def trainable(self) -> tuple[torch.nn.Module, list[tuple[torch.nn.Parameter, torch.Tensor]]]:
        """The wrapped model, and each trainable parameter with its value after injection."""
        from transformers import AutoModel

        fresh = AutoModel.from_pretrained(self.backbone.location)  # not backbone.model: serving may have hooked it
        wrapped = self.method.training.wrap(fresh, self.options)
        return wrapped, [(p, p.detach().clone()) for p in wrapped.parameters() if p.requires_grad]

    def __call__(self, folder: Path, seed: int) -> None:
        wrapped, parameters = self.trainable
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for parameter, initial in parameters:
                parameter.copy_(initial + torch.randn(initial.shape, generator=generator) * NOISE)
        self.method.training.save(wrapped, folder, self.model_id)
        write_head(folder, self.backbone, seed)


def options_label(options: dict[str, Any]) -> str:
    """A file-name-safe summary of a method's options: "default" when none are given."""
    if not options:
        return "default"
    return "_".join(re.sub(r"[^A-Za-z0-9.]+", "-", f"{key}-{value}").strip("-") for key, value in sorted(options.items()))


def mix_methods() -> list[str]:
    """The methods a mix registry cycles through: every registered one, in a fixed order."""
    return sorted(METHODS)


def task_name(i: int) -> str:
    return f"t{i:04d}"


def folder_writers(methods: Iterable[str], backbone: Backbone, model_id: str, targets: str, rank: int,
                   options: dict[str, Any]) -> dict[str, tuple[str, WriteFolder]]:
    """Per method: the sub-folder its adapters go to (named by their shape) and their writer. LoRA keeps its direct
    writer (folders as PEFT saves them, numbers comparable across runs); `options` go to the other methods."""
    writers = {}
    for method in methods:
        if method == "lora":
            config, paths = lora_config(model_id, targets, rank), target_paths(backbone.model, targets)
            writers[method] = (f"lora_{targets}_r{rank}", partial(write_adapter, backbone=backbone, paths=paths, config=config))
        else:
            writers[method] = (f"{method}_{options_label(options)}", MethodWriter(method, options, backbone, model_id))
    return writers


def stored_dtype(method: str, storage: str) -> str:
    """What --storage means for one method: that dtype where the method stores it, else float16 (every method's
    smallest float file; int8 and int4 are LoRA's)."""
    return storage if storage in METHODS[method].storage_dtypes else "float16"


def store_folder(folder: Path, method: str, storage: str) -> None:
    """Rewrite a written folder as `hub train` stores it with train.storage: the adapter in `stored_dtype`, the head
    in float16 (what every shipped task stores)."""
    METHODS[method].store(folder, stored_dtype(method, storage))
    Head.load(folder).save(folder, "float16")


def write_registry(root: Path, backbone_entry: dict, count: int, targets: str = "qv", rank: int = 8,
                   backbone: Backbone | None = None, progress: Callable[[Iterable], Iterable] | None = None,
                   method: str = "lora", options: dict[str, Any] | None = None, storage: str | None = None) -> Path:
    """A registry of `count` classification tasks t0000.. on the English backbone, folders under `root`
    (written once; a later call with more tasks writes only the new folders). `method` is a registered method
    (LoRA's shape: `targets`, `rank`; any other's: `options`) or "mix": task i uses the (i mod M)-th of every
    registered method, LoRA with `targets` and `rank`, the others with their default options. `storage` (a dtype)
    stores every folder as `store_folder` does; None keeps float32 files."""
    if options and method in ("lora", MIX):
        raise ValueError("options are for one method other than LoRA: LoRA's shape is targets and rank, and a mix "
                         "uses the other methods' defaults")
    backbone = backbone or english_backbone()[0]
    methods = mix_methods() if method == MIX else [method]
    writers = folder_writers(methods, backbone, backbone_entry.get("id", backbone_entry["source"]), targets, rank,
                             options or {})
    tasks = []
    for i in progress(range(count)) if progress else range(count):
        task_method = methods[i % len(methods)]
        shape, write = writers[task_method]
        if storage is not None:
            shape += f"_{stored_dtype(task_method, storage)}"
        folder = root / "adapters" / shape / task_name(i)
        if not (folder / "head.safetensors").is_file():
            write(folder, seed=i)
            if storage is not None:
                store_folder(folder, task_method, storage)
        tasks.append({"name": task_name(i), "backbone": "en", "kind": "classification", "labels": LABELS,
                      "inputs": ["text"], "metric": "accuracy", "adapter": str(folder)})
    label = (f"{MIX}_{targets}_r{rank}" if method == MIX else writers[method][0]) + (f"_{storage}" if storage else "")
    path = root / f"registry_{label}_{count}.yaml"
    path.write_text(yaml.safe_dump({"backbones": [backbone_entry], "tasks": tasks}, sort_keys=False), encoding="utf-8")
    return path


def glue_texts(count: int, seed: int = 0) -> list[str]:
    """`count` dev texts, a third each from SST-2, RTE and MRPC (their first text field)."""
    if not SHARED_DATA.is_dir():
        raise SystemExit(f"the serving benchmarks read GLUE dev texts from {SHARED_DATA}; it is not there.")
    registry = load_registry(hub.default_registry_path())
    texts = []
    for task in ("sst2", "rte", "mrpc"):
        spec = registry.task(task)
        texts += [row[spec.inputs[0]] for row in load_split(registry, spec, "dev")]
    rng = random.Random(seed)
    return rng.sample(texts, count)


def mixed_requests(texts: list[str], tasks: int, seed: int = 0) -> list[tuple[str, str]]:
    """A random task (of the first `tasks`) for each text."""
    rng = random.Random(seed)
    return [(task_name(rng.randrange(tasks)), text) for text in texts]
