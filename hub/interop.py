"""Import a plain PEFT LoRA adapter made elsewhere for a BERT sequence or token classifier
(`BertForSequenceClassification` / `BertForTokenClassification`, its `classifier` in `modules_to_save`)
as a task: the LoRA tensors move onto the shared backbone, the classifier becomes the task's head.

The two models compute the same thing: a sequence classifier's logits are `classifier(pooler_output)`
(the head with `pooling: pooler`), a token classifier's are `classifier(last_hidden_state)` at each
token (the tagging head, read at each word's first sub-word).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import cast

import torch
from huggingface_hub import ModelCard, ModelCardData
from safetensors.torch import load_file, save_file
from torch import nn

from heads import Head, kind

from .adapter_folder import AdapterFolder
from .backbone import load_backbone
from .card import serving_fields
from .errors import AdapterError, RemoteError
from .registry import TaskSpec, load_registry
from .remote import HubRef, backbone_for, ensure_new_task, install_task, validated_entry, verified_download

PEFT_CONFIG, PEFT_WEIGHTS = AdapterFolder.PEFT_CONFIG, AdapterFolder.PEFT_WEIGHTS
# PEFT task_type -> (kind, head options)
TASK_TYPES = {"SEQ_CLS": ("classification", {"pooling": "pooler"}), "TOKEN_CLS": ("tagging", {"crf": False})}
_KEY = re.compile(r"base_model\.model\.(?:bert\.)?(.+)")


def import_peft(registry_path: str | Path, source: str, task_name: str, labels: list[str],
                inputs: list[str] | None = None, metric: str | None = None, token: str | None = None) -> TaskSpec:
    """Convert the PEFT adapter at `source` (a folder, or a Hub `owner/name[@revision]`) into a task of the registry."""
    registry = load_registry(registry_path, strict_adapters=False)
    ensure_new_task(registry, task_name)
    files, provenance = _source_files(source, token)
    config = json.loads(files[PEFT_CONFIG].read_text(encoding="utf-8"))
    if config.get("peft_type") != "LORA" or config.get("task_type") not in TASK_TYPES:
        raise AdapterError(f"{source}: a {config.get('peft_type')} adapter with task_type {config.get('task_type')!r}; "
                           f"only LORA adapters for {' or '.join(TASK_TYPES)} "
                           "(BERT sequence / token classifiers) are imported.")
    kind_name, head_options = TASK_TYPES[config["task_type"]]
    backbone_name = backbone_for(registry, files[PEFT_CONFIG], source)
    entry = {"name": task_name, "backbone": backbone_name, "kind": kind_name, "labels": labels,
             "inputs": inputs or ["text"], "metric": metric or kind(kind_name).default_metric, "head": head_options,
             "adapter": f"adapters/{task_name}", "description": f"imported from the PEFT adapter {provenance}"}
    task = validated_entry(registry, entry)
    backbone = load_backbone(registry.backbone(backbone_name), registry)
    lora, classifier = _split_weights(load_file(str(files[PEFT_WEIGHTS])), source)
    head = _head_from_classifier(task, classifier, backbone.hidden_size, backbone.model.config.num_hidden_layers,
                                 source)
    model_id = registry.backbone(backbone_name).model_id

    def write(staging: Path) -> None:
        adapter_config = {**config, "base_model_name_or_path": model_id, "task_type": None, "modules_to_save": None}
        (staging / PEFT_CONFIG).write_text(json.dumps(adapter_config, indent=2), encoding="utf-8")
        save_file(lora, str(staging / PEFT_WEIGHTS))
        head.save(staging)
        (staging / AdapterFolder.CARD).write_text(_card(task, model_id, provenance), encoding="utf-8")

    return install_task(registry, entry, write)


def _source_files(source: str, token: str | None) -> tuple[dict[str, Path], str]:
    """PEFT's two files from a local folder, or hash-checked from the Hub at a pinned commit."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        missing = [name for name in (PEFT_CONFIG, PEFT_WEIGHTS) if not (folder / name).is_file()]
        if missing:
            pickled = (" (pickled adapter_model.bin is never loaded: save with safetensors)"
                       if (folder / "adapter_model.bin").exists() else "")
            raise AdapterError(f"{folder} lacks {', '.join(missing)}{pickled}; point at a PEFT adapter folder.")
        return {name: folder / name for name in (PEFT_CONFIG, PEFT_WEIGHTS)}, str(folder.resolve())
    try:
        ref = HubRef.parse(source)
    except RemoteError:
        raise AdapterError(f"{source!r} is neither a folder nor a Hub repo id; "
                           "give a PEFT adapter folder or owner/name[@revision].") from None
    files, commit = verified_download(ref, token, (PEFT_CONFIG, PEFT_WEIGHTS))
    return files, f"{ref.repo_id}@{commit}"


def _split_weights(weights: dict[str, torch.Tensor],
                   source: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """LoRA tensors renamed for the bare backbone (`bert.` dropped), and the classifier's weight and bias."""
    lora, classifier = {}, {}
    for key, tensor in weights.items():
        match = _KEY.fullmatch(key)
        rest = match.group(1) if match else key
        if rest.startswith("classifier."):
            classifier[rest.rsplit(".", 1)[1]] = tensor  # classifier.weight or classifier.modules_to_save.<name>.weight
        elif ".lora_" in rest:
            lora[f"base_model.model.{rest}"] = tensor
        else:
            raise AdapterError(f"{source}: tensor {key!r} is neither LoRA nor the classifier; "
                               "only those two can be imported.")
    if set(classifier) != {"weight", "bias"}:
        raise AdapterError(f"{source}: the adapter does not carry its classifier (weight and bias); "
                           "it must be saved with `modules_to_save=['classifier']` "
                           "(PEFT does this for task_type SEQ_CLS / TOKEN_CLS).")
    return lora, classifier


def _head_from_classifier(task: TaskSpec, classifier: dict[str, torch.Tensor], hidden: int, layers: int,
                          source: str) -> Head:
    assert task.labels is not None  # import_peft's entry always has labels
    weight = classifier["weight"]
    if weight.shape != (len(task.labels), hidden):
        raise AdapterError(f"{source}: the classifier maps {weight.shape[1]} features to {weight.shape[0]} labels; "
                           f"this task has {len(task.labels)} labels {task.labels} on a {hidden}-wide backbone. "
                           "Give one label per output, in order.")
    head = kind(task.kind).head.from_options(task.head, hidden, task.labels, layers)
    out = cast(nn.Linear, head.out)  # the classification and tagging heads end in a Linear `out`
    with torch.no_grad():
        out.weight.copy_(weight)
        out.bias.copy_(classifier["bias"])
    return head


def _card(task: TaskSpec, model_id: str, provenance: str) -> str:
    data = ModelCardData(base_model=model_id, library_name="peft",
                         tags=["lora", "bert-adapter-hub", task.kind, task.name],
                         bert_adapter_hub={"imported_from": provenance, "task": serving_fields(task)})
    body = (f"\n# {task.name}: imported PEFT adapter for `{model_id}`\n\n"
            f"Converted by `hub import-peft` from {provenance}: "
            "the LoRA tensors as they were, the classifier as this task's head. Not evaluated here.\n")
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n" + body).content
