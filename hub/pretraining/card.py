"""The model card (`README.md`) of a pre-trained domain adapter: Hub metadata, the objective, the corpus, the steps,
and held-out masked-token accuracy and perplexity before and after; how to serve it as a fill-mask task."""

from __future__ import annotations

from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from ..registry import BackboneSpec


def pretraining_card(name: str, backbone: BackboneSpec, report: dict[str, Any]) -> str:
    """Card text for the folder `name` that `hub pretrain` wrote with `report` (pretraining.json's content)."""
    method = report["recipe"]["adapter"]["method"]
    held = report["held_out"]
    data = ModelCardData(base_model=backbone.model_id, library_name="peft", language=backbone.language,
                         pipeline_tag="fill-mask", tags=[method, "bert-adapter-hub", "fill_mask", report["objective"]],
                         model_name=f"{name}-{method}")
    corpus = report["corpus"]
    body = f"""
# {name}: a domain {method} adapter pre-trained with `{report['objective']}` on `{backbone.model_id}`

Trained by `hub pretrain` on {corpus['train_texts']:,} texts ({report['steps']:,} optimizer steps; the backbone
frozen), with the masked-language-model head it serves as a `fill_mask` task.

| held out ({corpus['held_out_texts']} texts, the same masks) | before | after |
|---|---|---|
| masked-token accuracy | {held['accuracy']['before']:.4f} | {held['accuracy']['after']:.4f} |
| masked-token perplexity | {held['perplexity']['before']:.1f} | {held['perplexity']['after']:.1f} |
{_next_sentence_row(held)}
Serve it: add `{{name: {name}, backbone: <the backbone's registry name>, kind: fill_mask, adapter: <this folder>}}`
to `registry.yaml`, then `hub.run("{name}", "... [MASK] ...")`. Or start a task adapter from it
(`train.init_from` in the task's entry).
"""
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n" + body).content


def _next_sentence_row(held: dict[str, Any]) -> str:
    scores = held.get("next_sentence_accuracy")
    return f"| next-sentence accuracy | {scores['before']:.4f} | {scores['after']:.4f} |\n" if scores else ""
