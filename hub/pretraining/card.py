"""The model card (`README.md`) of a pre-trained domain adapter and the record it is written from
(`pretraining.json`): Hub metadata with eval results and sizes, the objective, the corpus, the steps, and held-out
masked-token accuracy and perplexity before and after; how to serve it as a fill-mask task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..adapter_folder import AdapterFolder
from ..registry import BackboneSpec

CARD_FILE = "pretraining.json"  # what `hub pretrain` measured; the model card (README.md) is written from it
MODEL_CARD = "README.md"
# the card metadata's `bert_adapter_hub` keys, as `hub train`'s cards name them (the shipped table reads them)
REPORT_KEYS = ("trainable_parameters", "total_parameters", "adapter_bytes", "train_seconds", "command", "objective",
               "storage")


def write_pretraining_files(folder: Path, name: str, backbone: BackboneSpec, report: dict[str, Any]) -> None:
    """pretraining.json and the card for `folder` from `report`, with its sizes measured: `adapter_bytes` (weights
    and configs: every file but these two) and `bytes` (the whole folder, these two included)."""
    records = (folder / CARD_FILE, folder / MODEL_CARD)
    stored = AdapterFolder(folder)
    report["adapter_bytes"] = stored.nbytes() - sum(f.stat().st_size for f in records if f.is_file())
    report.pop("bytes", None)
    for _ in range(5):  # the count is part of both files: written again until it counts itself (two passes or three)
        measured = stored.nbytes()
        if measured == report.get("bytes"):
            return
        report["bytes"] = measured
        records[0].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        records[1].write_text(pretraining_card(name, backbone, report), encoding="utf-8")
    raise RuntimeError(f"{folder}: the byte count written into its card does not settle")


def pretraining_card(name: str, backbone: BackboneSpec, report: dict[str, Any]) -> str:
    """Card text for the folder `name` that `hub pretrain` wrote with `report` (pretraining.json's content)."""
    method = report["recipe"]["adapter"]["method"]
    held = report["held_out"]
    corpus = report["corpus"]
    results = [EvalResult(task_type="fill-mask", dataset_type=name, dataset_name=f"{name}: held-out corpus texts",
                          dataset_split="held_out", metric_type="masked_token_accuracy",
                          metric_value=held["accuracy"]["after"])]
    results += [EvalResult(task_type="fill-mask", dataset_type=name, dataset_name=f"{name}: cloze rows",
                           dataset_split="dev", metric_type=metric, metric_value=round(value, 4))
                for metric, value in (report.get("served_metrics") or {}).items()]
    recorded = {key: report[key] for key in REPORT_KEYS if report.get(key) is not None}
    data = ModelCardData(base_model=backbone.model_id, library_name="peft", language=backbone.language,
                         pipeline_tag="fill-mask", tags=[method, "bert-adapter-hub", "fill_mask", report["objective"]],
                         model_name=f"{name}-{method}", eval_results=results,
                         bert_adapter_hub={**recorded, "train_examples": corpus["train_texts"],
                                           "eval_examples": corpus["held_out_texts"]})
    body = f"""
# {name}: a domain {method} adapter pre-trained with `{report['objective']}` on `{backbone.model_id}`

Trained by `hub pretrain` on {corpus['train_texts']:,} texts ({report['steps']:,} optimizer steps; the backbone
frozen), with the masked-language-model head it serves as a `fill_mask` task.

| held out ({corpus['held_out_texts']} texts, the same masks) | before | after |
|---|---|---|
| masked-token accuracy | {held['accuracy']['before']:.4f} | {held['accuracy']['after']:.4f} |
| masked-token perplexity | {held['perplexity']['before']:.1f} | {held['perplexity']['after']:.1f} |
{_next_sentence_row(held)}{_size_lines(report)}{_storage_note(report)}
Serve it: add `{{name: {name}, backbone: <the backbone's registry name>, kind: fill_mask, adapter: <this folder>}}`
to `registry.yaml`, then `hub.run("{name}", "... [MASK] ...")`. Or start a task adapter from it
(`train.init_from` in the task's entry).
{_reproduce(report)}"""
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n" + body).content


def _next_sentence_row(held: dict[str, Any]) -> str:
    scores = held.get("next_sentence_accuracy")
    return f"| next-sentence accuracy | {scores['before']:.4f} | {scores['after']:.4f} |\n" if scores else ""


def _size_lines(report: dict[str, Any]) -> str:
    """Trainable parameters and bytes (records written before these were measured have none)."""
    lines = []
    if report.get("trainable_parameters") and report.get("total_parameters"):
        share = report["trainable_parameters"] / report["total_parameters"]
        lines.append(f"- trainable parameters (adapter and heads): {report['trainable_parameters']:,} of "
                     f"{report['total_parameters']:,} ({share:.3%})")
    if report.get("adapter_bytes"):
        lines.append(f"- bytes on disk (weights and configs, cards excluded): {report['adapter_bytes']:,}")
    if report.get("train_seconds") is not None:
        lines.append(f"- trained in {report['train_seconds']:.0f} s")
    return "\n" + "\n".join(lines) + "\n" if lines else ""


def _storage_note(report: dict[str, Any]) -> str:
    """How the folder is stored after `hub quantize` (and what the stored files score served, when measured)."""
    storage = report.get("storage")
    if not storage:
        return ""
    rank = f" at rank {storage['rank']} (the trained update's best approximation)" if storage.get("rank") else ""
    served = report.get("served_metrics")
    scored = ("" if not served else "; served as stored, on its dev cloze rows: "
              + ", ".join(f"{name} {value:.4f}" for name, value in served.items()))
    return (f"\nStored by `hub quantize`: adapter weights as {storage['adapter']}{rank}, head as {storage['head']}; "
            f"{report['bytes']:,} bytes in all{scored}. The held-out scores above are the float32 adapter's.\n")


def _reproduce(report: dict[str, Any]) -> str:
    return f"\nReproduce: `{report['command']}`\n" if report.get("command") else ""


def record_quantized_storage(folder: Path, name: str, backbone: BackboneSpec, storage: dict[str, Any],
                             metrics: dict[str, float] | None, quantized_by: str) -> None:
    """Record `hub quantize`'s storage (and served metrics, if measured) in a pre-trained folder's pretraining.json
    and write its card again; `quantized_by`, the quantize command, follows the recorded reproduce command."""
    report = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    report["storage"] = storage
    if metrics is not None:
        report["served_metrics"] = metrics
    report["command"] = " && ".join(part for part in (report.get("command"), quantized_by) if part)
    write_pretraining_files(folder, name, backbone, report)
