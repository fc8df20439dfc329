"""Word in context: does a backbone's contextual vector of an ambiguous word tell its senses apart?

The same word in sentences of two senses ("bank" of a river and of money; 苹果 the fruit and the company), embedded
with `hub.embed(..., pooling="tokens")`: the word's vector is the mean of its tokens' (found by character offsets).
Cosine similarity of every pair of sentences is drawn as a heatmap, for the last layer and for the mean of the last
four; the separation is the mean cosine of same-sense pairs minus that of cross-sense pairs (0: the vectors do not
tell the senses apart).

    python benchmarks/word_in_context.py             # the shipped registry's en and zh backbones

Writes benchmarks/results/word_in_context.{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import hub  # noqa: E402
from hub.atomic import atomic_file  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
LAYERS = ("last", "last4")


@dataclass(frozen=True)
class Word:
    backbone: str
    word: str
    senses: dict[str, list[str]]  # sense -> sentences, each holding `word`


WORDS = [
    Word("en", "bank", {
        "river": ["We sat on the bank and watched the river flow.", "The flood washed away the muddy bank.",
                  "Reeds grow thick along the bank of the stream.", "He fished from the grassy bank all morning.",
                  "The canoe drifted toward the far bank of the lake.", "Otters dug a burrow in the river bank."],
        "money": ["She opened a savings account at the bank.", "The bank approved our loan on Monday.",
                  "He withdrew cash from the bank before the trip.", "The central bank raised interest rates again.",
                  "Robbers broke into the bank vault at night.", "My bank charges a fee for every transfer."],
    }),
    Word("zh", "苹果", {
        "fruit": ["我每天早上吃一个苹果。", "这个苹果又红又甜。", "妈妈在市场买了一斤苹果。",
                  "果园里的苹果熟了。", "他把苹果切成小块给孩子吃。", "苹果富含维生素和纤维。"],
        "company": ["苹果公司发布了新款手机。", "苹果的股价今天上涨了。", "他在苹果担任软件工程师。",
                    "苹果推出了新的操作系统。", "这家供应商为苹果生产芯片。", "苹果和微软在市场上竞争。"],
    }),
]


def word_vectors(served: hub.Hub, word: Word, layers: str) -> np.ndarray:
    """[sentences, hidden]: the mean vector of the tokens overlapping the word's first occurrence in each sentence."""
    sentences = [s for group in word.senses.values() for s in group]
    vectors = []
    for sentence, result in zip(sentences, served.embed(sentences, word.backbone, layers, "tokens")):
        start = sentence.index(word.word)
        end = start + len(word.word)
        picked = [t["embedding"] for t in result["tokens"] if t["start"] < end and t["end"] > start]
        if not picked:
            raise ValueError(f"{word.word!r} gives no token in {sentence!r}")
        vectors.append(np.mean(picked, axis=0))
    return np.asarray(vectors)


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit @ unit.T


def separation(similarity: np.ndarray, senses: list[int]) -> dict[str, float]:
    """Mean cosine of same-sense pairs (a sentence with itself left out) and of cross-sense pairs, their gap, and the
    share of sentences whose most similar other sentence has the same sense (a scale-free check: the last-four mean
    raises every cosine)."""
    labels = np.asarray(senses)
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    within = float(similarity[same & off_diagonal].mean())
    across = float(similarity[~same].mean())
    nearest = np.where(off_diagonal, similarity, -np.inf).argmax(1)  # each sentence's most similar other sentence
    return {"same_sense": round(within, 4), "cross_sense": round(across, 4), "separation": round(within - across, 4),
            "nearest_same_sense": round(float((labels[nearest] == labels).mean()), 4)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    served = hub.Hub.load(args.registry or hub.default_registry_path())
    rows, figure = [], plt.figure(figsize=(5.2 * len(LAYERS), 4.8 * len(WORDS)))
    for w, word in enumerate(WORDS):
        senses = [i for i, group in enumerate(word.senses.values()) for _ in group]
        for l, layers in enumerate(LAYERS):
            similarity = cosine_matrix(word_vectors(served, word, layers))
            rows.append({"backbone": word.backbone, "model": served.registry.backbone(word.backbone).model_id,
                         "word": word.word, "layers": layers, **separation(similarity, senses)})
            axes = figure.add_subplot(len(WORDS), len(LAYERS), w * len(LAYERS) + l + 1)
            shown = axes.imshow(similarity, vmin=float(similarity.min()), vmax=1.0, cmap="viridis")
            ticks = [f"{sense} {i + 1}" for sense, group in word.senses.items() for i in range(len(group))]
            axes.set_xticks(range(len(ticks)), ticks, rotation=90, fontsize=7)
            axes.set_yticks(range(len(ticks)), ticks, fontsize=7)
            axes.set_title(f"{word.backbone} '{word.word if word.backbone == 'en' else 'pingguo'}' - {layers}: "
                           f"separation {rows[-1]['separation']:+.3f}", fontsize=9)
            figure.colorbar(shown, ax=axes, fraction=0.046)
    figure.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_file(args.out / "word_in_context.png") as staging:
        figure.savefig(staging, dpi=110, format="png")
    command = "python benchmarks/word_in_context.py" + (f" --registry {args.registry}" if args.registry else "")
    report = {"command": command, "rows": rows,
              "sentences": {w.word: w.senses for w in WORDS}}
    with atomic_file(args.out / "word_in_context.json") as staging:
        staging.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    table = "\n".join(f"| {r['backbone']} ({r['model']}) | {r['word']} | {r['layers']} | {r['same_sense']:.3f} | "
                      f"{r['cross_sense']:.3f} | {r['separation']:+.3f} | {r['nearest_same_sense']:.2f} |" for r in rows)
    text = f"""# Word in context

`{command}`: each word's contextual vector (the mean of its tokens) in 12 sentences, 6 per sense; cosine of every
pair. Separation = mean same-sense cosine - mean cross-sense cosine (a sentence with itself left out); nearest: the
share of sentences whose most similar other sentence has the same sense.

| backbone | word | layers | same sense | cross sense | separation | nearest |
|---|---|---|---|---|---|---|
{table}

![heatmaps](word_in_context.png)
"""
    with atomic_file(args.out / "word_in_context.md") as staging:
        staging.write_text(text, encoding="utf-8")
    print(text)
    return report


if __name__ == "__main__":
    main()
