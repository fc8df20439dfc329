"""Write a backbone folder with the tokenizer and architecture of a real one and random weights (seeded).

For speed and memory measurements where the real weights cannot travel: the GPU machine this project
borrows takes 64 MiB per call, MiniLM's weights alone are 91 MB. What the serving benchmark measures
(throughput, loading, memory) depends on the shapes, not on the weights' values. `--size bert-base`
keeps the tokenizer and widens the model to BERT-base (12 layers, hidden 768), the size most users serve.

    python benchmarks/random_backbone.py /tmp/minilm-random                      # like the embedded English backbone
    python benchmarks/random_backbone.py /tmp/bert-base-random --size bert-base --like FOLDER
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

from hub.atomic import atomic_folder

SIZES = {
    "same": {},
    "bert-base": {"num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072},
}


def write_random_backbone(like: str, out: Path, size: str = "same", seed: int = 0) -> Path:
    """`out` gets `like`'s tokenizer and config (resized by `size`) and freshly initialised weights,
    written into a temp folder that replaces `out` whole (never a half-written backbone)."""
    try:
        config, tokenizer = AutoConfig.from_pretrained(like), AutoTokenizer.from_pretrained(like)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--like {like}: no model config and tokenizer there ({str(exc).splitlines()[0]}); "
                         "name a model folder or a Hub id.") from None
    for key, value in SIZES[size].items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    with atomic_folder(out) as staging:
        AutoModel.from_config(config).save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--like", help="a model folder or Hub id with config + tokenizer (default: the embedded English backbone)")
    parser.add_argument("--size", choices=sorted(SIZES), default="same")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.like is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from serving_setup import english_entry

        from hub.backbone import resolve_source
        from hub.registry import BackboneSpec

        args.like = resolve_source(BackboneSpec(**english_entry()))
    print(write_random_backbone(args.like, args.out, args.size, args.seed))


if __name__ == "__main__":
    main()
