"""The shipped Chinese fill-mask adapter, and what a small prediction head and small files cost it.

BERT's prediction head (a hidden x hidden dense layer, a layer norm, a bias over the vocabulary) is 284,808
parameters on m3e-small: 570 KB in float16, three times the 0.2%-of-backbone budget every shipped task keeps.
`hub pretrain --transform-rank r` makes the dense layer two of rank r. This script pre-trains one domain adapter per
head shape (MLM, LoRA r=8 on every linear layer, the same corpus, steps and seed), stores each as a user would
(`hub quantize`: the float32 folder as trained; int4 LoRA with a float16 head; the same at LoRA rank 4; and with an
int8 head), and scores
every stored folder through the serving router on cloze rows from texts no variant trained on.

    python benchmarks/fill_mask_zh.py                          # the grid (about 1.5 hours here)
    python benchmarks/fill_mask_zh.py --ship r16/int4_rank4    # then copy that folder to adapters/fill_mask_zh
    python benchmarks/fill_mask_zh.py --rescore                # score again after serving changed (minutes)

The corpus: the training texts of the Chinese tasks in registry.yaml (news sentences, news titles, product reviews,
questions, encyclopedia paragraphs; ../shared/data), taken in turn (`hub pretrain --task ... --task ...`), the first
--corpus-texts for training and the next --cloze-texts for the cloze rows: one CJK character per text replaced by
[MASK], the character the label. Pre-trained folders are kept under --work, so a rerun scores without training.
Writes benchmarks/results/fill_mask_zh.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hub.atomic import atomic_file, atomic_folder  # noqa: E402
from hub.bench.report import machine  # noqa: E402
from hub.cjk import is_cjk  # noqa: E402
from hub.pretraining.corpus import tasks_texts  # noqa: E402
from hub.registry import Registry, load_registry  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CORPUS_TASKS = ["msra_ner", "tnews", "sentiment_zh", "afqmc", "cmrc2018", "cws_zh"]
HEADS = {"full": None, "r16": 16, "r64": 64}  # variant -> the head's transform rank (None: BERT's dense layer)
STORAGES = {"float32": ("float32", None, "float32"), "int4": ("int4", None, "float16"),  # adapter, rank, head
            "int4_rank4": ("int4", 4, "float16"), "int4_rank4_int8_head": ("int4", 4, "int8")}
BUDGET_SHARE = 0.002  # a shipped task's folder: at most 0.2% of its backbone's bytes (tests/test_shipped.py)


def cloze_rows(texts: list[str], tokenizer: Any, seed: int) -> list[dict[str, str]]:
    """One CJK character per text (one the tokenizer knows) replaced by [MASK]; the character is the label."""
    rng = random.Random(seed)
    rows = []
    for text in texts:
        text = text[:100]  # the mask stays inside the window
        places = [i for i, ch in enumerate(text) if is_cjk(ch) and tokenizer.convert_tokens_to_ids(ch) !=
                  tokenizer.unk_token_id]
        if places:
            i = rng.choice(places)
            rows.append({"text": text[:i] + tokenizer.mask_token + text[i + 1:], "label": text[i]})
    return rows


def write_registry(work: Path, folder: Path, cloze: Path) -> Path:
    """A registry of one fill_mask task over the shipped zh backbone, its dev set the cloze rows."""
    document = yaml.safe_load((ROOT / "registry.yaml").read_text(encoding="utf-8"))
    document["backbones"] = [b for b in document["backbones"] if b["name"] == "zh"]
    document["tasks"] = [{"name": "fill_mask_zh", "backbone": "zh", "kind": "fill_mask", "adapter": str(folder),
                          "head": {"top_k": 5}, "metric": "accuracy",
                          "data": {"format": "jsonl", "dev": str(cloze)}}]
    path = work / f"registry-{folder.name}.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def pretrained(registry: Registry, texts: list[str], folder: Path, rank: int | None, args: argparse.Namespace) -> dict:
    """The variant's pre-training card, training it first unless --work already holds it."""
    from hub.pretraining.train import PretrainRecipe, pretrain

    card_file = folder / "pretraining.json"
    recipe = PretrainRecipe(objective="mlm", transform_rank=rank, epochs=args.epochs, max_length=args.max_length,
                            seed=42)
    if card_file.is_file():
        card = json.loads(card_file.read_text(encoding="utf-8"))
        kept = card["recipe"]
        if (kept["transform_rank"], kept["max_length"], kept["epochs"], card["corpus"]["texts"]) == (
                rank, recipe.max_length, recipe.epochs, len(texts)):
            return card
    return pretrain(registry, "zh", texts, folder, recipe, progress=True,
                    command=f"python benchmarks/fill_mask_zh.py --heads {folder.name}")


def stored_score(work: Path, source: Path, storage: str, cloze: Path, rescore: bool) -> dict[str, Any]:
    """`source` stored as `storage` (a copy, through `hub quantize`'s code) and scored on the cloze rows as served
    (unless an earlier run did, and not `rescore`)."""
    from hub.quantize import quantize_task

    adapter, rank, head = STORAGES[storage]
    folder = work / "stored" / f"{source.name}-{storage}"
    kept = _stored_record(folder)
    trained = json.loads((source / "pretraining.json").read_text(encoding="utf-8"))
    if not rescore and kept and kept.get("served_metrics") and (kept["recipe"], kept["held_out"]) == (trained["recipe"],
                                                                                     trained["held_out"]):
        return {"storage": storage, "folder": str(folder), "bytes": kept["bytes"],
                "cloze_accuracy": kept["served_metrics"]["accuracy"]}  # stored and scored by an earlier run
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(source, folder)
    registry = load_registry(write_registry(work, folder, cloze))
    report = quantize_task(registry, "fill_mask_zh", adapter, head, evaluate=True, progress=False, rank=rank)  # type: ignore[arg-type]
    return {"storage": storage, "folder": str(folder), "bytes": report["bytes_after"],
            "cloze_accuracy": report["metrics"]["accuracy"]}


def _stored_record(folder: Path) -> dict[str, Any] | None:
    path = folder / "pretraining.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus-texts", type=int, default=20000)
    parser.add_argument("--cloze-texts", type=int, default=2000)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-length", type=int, default=64, help="tokens per training text (longer ones are cut)")
    parser.add_argument("--heads", nargs="+", default=list(HEADS), choices=list(HEADS))
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "bert-adapter-hub" / "fill_mask_zh")
    parser.add_argument("--rescore", action="store_true",
                        help="store and score every folder again (serving changed), keeping the pre-trained ones")
    parser.add_argument("--ship", help="copy this variant/storage (e.g. r16/int4_rank4) to adapters/fill_mask_zh")
    parser.add_argument("--out", type=Path, default=RESULTS / "fill_mask_zh")
    args = parser.parse_args()

    from hub.backbone import load_backbone

    shipped = load_registry(ROOT / "registry.yaml", strict_adapters=False)
    corpus = tasks_texts(shipped, CORPUS_TASKS)
    texts, held = corpus[: args.corpus_texts], corpus[args.corpus_texts: args.corpus_texts + args.cloze_texts]
    args.work.mkdir(parents=True, exist_ok=True)
    backbone = load_backbone(shipped.backbone("zh"), shipped)
    tokenizer = backbone.tokenizer
    cloze = args.work / "cloze.jsonl"
    cloze.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in cloze_rows(held, tokenizer, 0)),
                     encoding="utf-8")
    backbone_bytes = sum(p.numel() * p.element_size() for p in backbone.model.parameters())
    rows = []
    for variant in args.heads:
        card = pretrained(shipped, texts, args.work / variant, HEADS[variant], args)
        for storage in STORAGES:
            scored = stored_score(args.work, args.work / variant, storage, cloze, args.rescore)
            rows.append({"head": variant, "transform_rank": HEADS[variant], "steps": card["steps"],
                         "held_out_accuracy": card["held_out"]["accuracy"]["after"],
                         "held_out_perplexity": card["held_out"]["perplexity"]["after"], **scored,
                         "share": scored["bytes"] / backbone_bytes})
            print(json.dumps(rows[-1]), flush=True)
    write_report(args, rows, backbone_bytes, len(texts), sum(1 for _ in cloze.open(encoding="utf-8")))
    if args.ship:
        ship(shipped, args.work, args.ship)


def write_report(args: argparse.Namespace, rows: list[dict], backbone_bytes: int, corpus: int, cloze: int) -> None:
    budget = int(BUDGET_SHARE * backbone_bytes)
    lines = ["# The Chinese fill-mask adapter: head shape and storage", "",
             f"`python benchmarks/fill_mask_zh.py` ({machine()}): MLM on {corpus:,} texts of the Chinese tasks' "
             f"training sets, {args.epochs:g} epoch, at most {args.max_length} tokens each, LoRA r=8 on every linear "
             "layer, seed 42; scored through the "
             f"router on {cloze:,} cloze rows from other texts (top-1 accuracy). The budget: 0.2% of the backbone's "
             f"{backbone_bytes:,} bytes = {budget:,}.", "",
             "| head | storage | bytes (all files) | share of backbone | cloze accuracy | held-out masked-token "
             "accuracy (float32) |", "|---|---|---|---|---|---|"]
    for row in rows:
        fits = "" if row["bytes"] <= budget else " (over)"
        lines.append(f"| {row['head']} | {row['storage']} | {row['bytes']:,}{fits} | {100 * row['share']:.3f}% | "
                     f"{row['cloze_accuracy']:.4f} | {row['held_out_accuracy']:.4f} |")
    with atomic_file(args.out.with_suffix(".md")) as path:
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with atomic_file(args.out.with_suffix(".json")) as path:
        path.write_text(json.dumps({"machine": machine(), "corpus_texts": corpus, "cloze_rows": cloze,
                                    "epochs": args.epochs, "backbone_bytes": backbone_bytes, "rows": rows},
                                   indent=2) + "\n", encoding="utf-8")


def ship(shipped: Registry, work: Path, choice: str) -> None:
    """Copy the stored folder `variant/storage` to adapters/fill_mask_zh (replaced in one step), its card named so."""
    from hub.pretraining.card import write_pretraining_files

    variant, _, storage = choice.partition("/")
    source = work / "stored" / f"{variant}-{storage}"
    if not source.is_dir():
        raise SystemExit(f"--ship {choice}: {source} was not made; choose one of the table's head/storage pairs.")
    with atomic_folder(ROOT / "adapters" / "fill_mask_zh") as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        report = json.loads((staging / "pretraining.json").read_text(encoding="utf-8"))
        report["command"] = f"python benchmarks/fill_mask_zh.py --ship {choice}"  # it pre-trains and stores
        write_pretraining_files(staging, "fill_mask_zh", shipped.backbone("zh"), report)
    print(f"shipped {source} -> adapters/fill_mask_zh")


if __name__ == "__main__":
    main()
