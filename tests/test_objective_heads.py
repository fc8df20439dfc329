"""The pre-training objectives' heads (hub/pretraining/objective_heads.py, heads/fill_mask): the masked-LM head tied to the frozen
word embeddings (never copied, never trained), the span boundary head reading only a span's boundaries and its
positions, the next-sentence head reading the first token; each learns on a small problem."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from heads.fill_mask.head import FillMaskConfig, FillMaskHead
from hub.pretraining.objective_heads import NextSentenceHead, SpanBoundaryHead

HIDDEN, VOCAB = 16, 50


def _embeddings() -> nn.Embedding:
    torch.manual_seed(0)
    embeddings = nn.Embedding(VOCAB, HIDDEN)
    embeddings.weight.requires_grad_(False)  # the frozen backbone's
    return embeddings


class _Backbone(nn.Module):
    def __init__(self, embeddings: nn.Embedding):
        super().__init__()
        self.embeddings = embeddings

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings


def _mlm_head(vocab: int = VOCAB) -> FillMaskHead:
    return FillMaskHead(FillMaskConfig(kind="fill_mask", hidden_size=HIDDEN, vocab_size=vocab))


def test_the_masked_lm_head_scores_against_the_tied_frozen_embeddings():
    embeddings = _embeddings()
    head = _mlm_head()
    with pytest.raises(RuntimeError, match="not bound"):
        head.scores(torch.randn(1, HIDDEN))
    head.bind(_Backbone(embeddings))
    assert head._decoder[0].data_ptr() == embeddings.weight.data_ptr()  # tied, not copied
    assert all(t.shape != embeddings.weight.shape for t in head.state_dict().values())  # not saved with the head
    assert head.scores(torch.randn(2, 5, HIDDEN)).shape == (2, 5, VOCAB)
    with pytest.raises(ValueError, match="vocabulary of 49 tokens"):
        _mlm_head(VOCAB - 1).bind(_Backbone(embeddings))
    states = torch.randn(64, HIDDEN)
    targets = torch.randint(0, VOCAB, (64,))
    before = embeddings.weight.clone()
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        loss = nn.functional.cross_entropy(head.scores(states), targets)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first / 3  # it learns
    assert torch.equal(embeddings.weight, before) and embeddings.weight.grad is None


def test_the_span_boundary_head_reads_only_the_boundaries_and_the_place_in_the_span():
    head = SpanBoundaryHead(HIDDEN, max_span_tokens=8, position_size=4).eval()
    hidden = torch.randn(2, 10, HIDDEN)
    rows, left, right = torch.tensor([0, 0, 1]), torch.tensor([2, 2, 4]), torch.tensor([6, 6, 8])
    offsets = torch.tensor([0, 1, 2])
    out = head(hidden, rows, left, right, offsets)
    assert out.shape == (3, HIDDEN)
    changed = hidden.clone()
    changed[0, 3:6] = torch.randn(3, HIDDEN)  # inside row 0's span
    assert torch.equal(head(changed, rows, left, right, offsets), out)
    changed[0, 2] += 1.0  # its left boundary
    assert not torch.allclose(head(changed, rows, left, right, offsets)[:2], out[:2])
    assert not torch.allclose(out[0], out[1])  # the same span, two places in it
    with pytest.raises(ValueError, match="more than 8 tokens"):
        head(hidden, rows, left, right, torch.tensor([0, 1, 8]))


def test_the_next_sentence_head_reads_the_first_token_and_learns():
    head = NextSentenceHead(HIDDEN)
    hidden = torch.randn(32, 6, HIDDEN)
    labels = (hidden[:, 0, 0] > 0).long()  # decidable from the first token
    changed = hidden.clone()
    changed[:, 1:] = 0
    assert torch.equal(head(changed), head(hidden))
    optimizer = torch.optim.Adam(head.parameters(), lr=5e-2)
    for _ in range(100):
        loss = nn.functional.cross_entropy(head(hidden), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert (head(hidden).argmax(-1) == labels).float().mean() > 0.9


def test_neither_embedded_backbone_ships_a_trained_prediction_head():
    """Why `hub pretrain` trains the masked-LM head: the embedded checkpoints hold the encoder and a pooler only."""
    from pathlib import Path

    from safetensors import safe_open

    from hub.backbone import resolve_source
    from hub.registry import load_registry

    registry = load_registry(Path(__file__).resolve().parent.parent / "registry.yaml")
    for language in ("en", "zh"):
        folder = Path(resolve_source(registry.backbone(language), registry))
        if (folder / "model.safetensors").exists():
            with safe_open(str(folder / "model.safetensors"), "pt") as weights:
                keys = list(weights.keys())
        else:
            keys = list(torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True))
        assert any("encoder.layer.0." in key for key in keys)
        assert not any("predictions" in key or key.startswith("cls.") for key in keys), language
