"""`hub pretrain`: a domain adapter (any registered method) and its objective heads trained on raw text with
transformers' Trainer, the backbone frozen; written atomically as an adapter folder PEFT reads, with the heads and a
card measuring held-out masked-token accuracy before and after."""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import Trainer

from ..atomic import atomic_folder
from ..backbone import load_backbone
from ..errors import DataError, HubError
from ..methods.base import AdapterOptions, adapter_options, method_named
from ..registry import Registry
from ..trainer_setup import adamw_with_warmup, optimizer_steps, quiet_transformers, trainer_arguments
from .card import write_pretraining_files
from .collator import EncodedText, MaskingCollator, encode_pairs, encode_texts
from .masking import OBJECTIVES, Masker, MaskingOptions, Objective, UnigramSampler
from .model import HeldOutScore, PretrainingModel, held_out_score
from .sentence_pairs import next_sentence_pairs

HEADS_FILE = "pretraining_heads.safetensors"  # the objective heads beside the masked-LM one (which is head.safetensors)
HELD_OUT_SHARE = 0.05
HELD_OUT_MAX = 500
HELD_OUT_SEED = 1234  # the held-out masks, the same before and after training
WEIGHT_DECAY = 0.01  # AdamW's default, as `hub train`'s recipe


@dataclass(frozen=True)
class PretrainRecipe:
    objective: Objective = "mlm"
    span_boundary: bool = False  # SpanBERT's span boundary objective beside span masking
    next_sentence: bool = False  # BERT's next-sentence prediction: the corpus is documents, read as sentence pairs
    transform_rank: int | None = None  # the prediction head's dense layer as two of this rank (a small head)
    adapter: dict[str, Any] | None = None  # the method and its options ({method: lora, r: 8}: the default)
    epochs: float = 1.0
    batch_size: int = 16
    learning_rate: float = 5e-4  # the adapter's
    head_learning_rate: float = 5e-3  # the objective heads' (they start from scratch over the whole vocabulary)
    warmup_ratio: float = 0.06
    max_length: int = 128
    seed: int = 42

    def __post_init__(self) -> None:
        """Refused before any loading: an objective that does not exist, a boundary objective without spans."""
        if self.objective not in OBJECTIVES:
            raise HubError(f"--objective {self.objective!r} is not one of {', '.join(OBJECTIVES)}")
        if self.span_boundary and self.objective != "span":
            raise HubError("the span boundary objective predicts masked spans from their boundaries: use it with "
                           "--objective span")


def held_out_split(texts: list[EncodedText], seed: int) -> tuple[list[EncodedText], list[EncodedText]]:
    """(training texts, held-out texts): HELD_OUT_SHARE of the texts (at least one, at most HELD_OUT_MAX), drawn with
    `seed`."""
    order = np.random.default_rng(seed).permutation(len(texts))
    count = min(HELD_OUT_MAX, max(1, round(HELD_OUT_SHARE * len(texts))))
    held = set(order[:count].tolist())
    return [t for i, t in enumerate(texts) if i not in held], [t for i, t in enumerate(texts) if i in held]


def pretrain(registry: Registry, backbone: str, texts: list[str], output: Path, recipe: PretrainRecipe,
             progress: bool = True, documents: list[list[str]] | None = None,
             command: str | None = None) -> dict[str, Any]:
    """Train a domain adapter on `texts` (with next-sentence prediction: on sentence pairs drawn from `documents`,
    lists of sentences) over the registry's backbone `backbone` and write it to `output` (replaced in one step;
    nothing is written if anything fails); `command`, the one that reproduces it, goes on the card. Returns the
    card's record (pretraining.json)."""
    options = _adapter_options(recipe.adapter or {"method": "lora"})
    method = method_named(options.method)
    spec = registry.backbone(backbone)
    if recipe.next_sentence:
        try:
            pairs = next_sentence_pairs(documents or [], seed=recipe.seed)
        except ValueError as exc:
            raise DataError(str(exc)) from None
    frozen = load_backbone(spec, registry, shared=False)
    tokenizer = frozen.tokenizer
    usable, dropped = (encode_pairs(tokenizer, pairs, recipe.max_length) if recipe.next_sentence
                       else encode_texts(tokenizer, texts, recipe.max_length))
    if len(usable) < 2:
        total = len(pairs) if recipe.next_sentence else len(texts)
        raise DataError(f"{len(usable)} of {total} texts have a token to mask after tokenizing; pre-training "
                        "needs at least 2: give text in the backbone's language.")
    train_texts, held_texts = held_out_split(usable, recipe.seed)
    unigram = UnigramSampler.from_corpus((t.input_ids for t in train_texts), len(tokenizer), tokenizer.all_special_ids)
    options_masking = MaskingOptions()

    def collator(seed: int) -> MaskingCollator:
        return MaskingCollator(tokenizer, Masker(recipe.objective, tokenizer.mask_token_id, unigram, options_masking,
                                                 seed))

    torch.manual_seed(recipe.seed)
    model = PretrainingModel(frozen.model, options, span_boundary=recipe.span_boundary,
                             next_sentence=recipe.next_sentence, transform_rank=recipe.transform_rank)
    before = held_out_score(model, collator(HELD_OUT_SEED), held_texts)
    started = time.perf_counter()
    steps = _train(model, train_texts, collator(recipe.seed), recipe, progress)
    train_seconds = time.perf_counter() - started
    after = held_out_score(model, collator(HELD_OUT_SEED), held_texts)
    card = {"backbone": spec.model_id, "language": spec.language, "objective": recipe.objective,
            "recipe": {**asdict(recipe), "adapter": options.model_dump()}, "masking": asdict(options_masking),
            "corpus": {"texts": len(pairs) if recipe.next_sentence else len(texts),
                       **({"documents": len(documents or []), "sentence_pairs": len(pairs)} if recipe.next_sentence
                          else {}),
                       "dropped_nothing_to_mask": dropped, "train_texts": len(train_texts),
                       "held_out_texts": len(held_texts)},
            "steps": steps, "held_out": _before_after(before, after),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total_parameters": sum(p.numel() for p in model.parameters()), "train_seconds": round(train_seconds, 1),
            "command": command}
    with atomic_folder(output) as staging:
        method.training.save(model.encoder, staging, spec.model_id)
        model.mlm.save(staging)  # the fill-mask head a fill_mask task serves
        objective_heads = {f"{prefix}.{k}": v.detach().contiguous() for prefix, head in
                           (("sbo", model.sbo), ("nsp", model.nsp)) if head is not None
                           for k, v in head.state_dict().items()}
        if objective_heads:
            save_file(objective_heads, str(staging / HEADS_FILE))
        write_pretraining_files(staging, output.name, spec, card)
    return card


def _before_after(before: HeldOutScore, after: HeldOutScore) -> dict[str, dict[str, float]]:
    scores = {"accuracy": {"before": round(before.accuracy, 4), "after": round(after.accuracy, 4)},
              "perplexity": {"before": round(before.perplexity, 2), "after": round(after.perplexity, 2)}}
    if before.next_sentence_accuracy is not None and after.next_sentence_accuracy is not None:
        scores["next_sentence_accuracy"] = {"before": round(before.next_sentence_accuracy, 4),
                                            "after": round(after.next_sentence_accuracy, 4)}
    return scores


def _adapter_options(raw: dict[str, Any]) -> AdapterOptions:
    """The method's validated options; HubError naming what is wrong."""
    try:
        return adapter_options(raw)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        first = str(exc).splitlines()
        raise HubError(f"adapter {raw}: {' '.join(first[:3])}") from None


def _train(model: PretrainingModel, texts: list[EncodedText], collator: MaskingCollator, recipe: PretrainRecipe,
           progress: bool) -> int:
    """transformers' Trainer over the adapter and head parameters; returns the optimizer steps taken."""
    steps = optimizer_steps(len(texts), recipe.batch_size, recipe.epochs)
    heads = [p for name, p in model.named_parameters() if not name.startswith("encoder.")]
    optimizer, scheduler = adamw_with_warmup(
        [([p for p in model.encoder.parameters() if p.requires_grad], recipe.learning_rate),
         (heads, recipe.head_learning_rate)], WEIGHT_DECAY, recipe.warmup_ratio, steps)
    with tempfile.TemporaryDirectory() as scratch:
        args = trainer_arguments(scratch, recipe.epochs, recipe.batch_size, recipe.learning_rate, recipe.seed,
                                 progress, logging_steps=50)
        with quiet_transformers():
            trainer = Trainer(model=model, args=args, train_dataset=texts,
                              data_collator=collator, optimizers=(optimizer, scheduler))
            trainer.train()
    model.eval()
    return trainer.state.global_step
