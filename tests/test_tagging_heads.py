"""Tag schemes, the constrained CRF (against brute force), and the tagging head's contract."""

from __future__ import annotations

import itertools

import pytest
import torch

from heads import KINDS, Head, HeadLoadError
from heads.tagging.crf import CRF
from heads.tagging.schemes import (
    detect_scheme, repair_tags, spans, subword_tags, tags_for_spans, transition_constraints, without_overlaps, word_tag,
)

BIO = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG"]
BIOES = ["O", "B-PER", "I-PER", "E-PER", "S-PER"]


def test_detect_scheme():
    assert detect_scheme(BIO) == "bio"
    assert detect_scheme(BIOES) == "bioes"
    assert detect_scheme(["B", "M", "E", "S"]) == "bmes"
    assert detect_scheme(["NN", "VB", "DT"]) == "plain"


@pytest.mark.parametrize("scheme", ["bio", "bioes", "bmes"])
def test_spans_round_trip(scheme):
    entities = [(0, 1, "PER"), (2, 5, "ORG"), (5, 7, "PER")]
    tags = tags_for_spans(8, entities, scheme)
    assert spans(tags, scheme) == entities


def test_spans_are_lenient_like_conlleval():
    assert spans(["O", "I-PER", "I-PER", "B-ORG"], "bio") == [(1, 3, "PER"), (3, 4, "ORG")]
    assert spans(["B-PER", "I-ORG"], "bio") == [(0, 1, "PER"), (1, 2, "ORG")]
    assert spans(["B", "E", "S", "B", "M"], "bmes") == [(0, 2, ""), (2, 3, ""), (3, 5, "")]


def test_overlapping_spans_are_refused_for_tagging_or_resolved_to_the_longest():
    with pytest.raises(ValueError, match="overlaps"):
        tags_for_spans(5, [(0, 3, "PER"), (2, 4, "ORG")], "bio")
    assert without_overlaps([(2, 4, "ORG"), (0, 3, "PER"), (4, 6, "LOC"), (5, 6, "X")]) == [(0, 3, "PER"), (4, 6, "LOC")]


@pytest.mark.parametrize(("tag", "scheme"), [("S-PER", "bioes"), ("B-PER", "bioes"), ("E-PER", "bioes"), ("I-PER", "bioes"),
                                             ("B-PER", "bio"), ("I-PER", "bio"), ("S", "bmes"), ("E", "bmes"), ("O", "bio")])
def test_subword_tags_keep_the_word_span(tag, scheme):
    pieces = subword_tags(tag, 3, scheme)
    assert len(pieces) == 3
    assert word_tag(pieces[0], pieces[-1], scheme) == tag
    assert subword_tags(tag, 1, scheme) == [tag]


def test_repair_makes_a_valid_sequence():
    assert repair_tags(["I-PER", "I-PER", "O"], "bio") == ["B-PER", "I-PER", "O"]
    assert repair_tags(["I-PER", "E-PER", "B-PER"], "bioes") == ["B-PER", "E-PER", "S-PER"]


def test_constraints_forbid_what_the_scheme_forbids():
    start, allowed, end = transition_constraints(BIO, "bio")
    index = {tag: i for i, tag in enumerate(BIO)}
    assert not allowed[index["B-PER"], index["I-ORG"]]
    assert not allowed[index["O"], index["I-PER"]]
    assert allowed[index["B-PER"], index["I-PER"]] and allowed[index["I-ORG"], index["B-PER"]]
    assert not start[index["I-PER"]] and start[index["B-ORG"]] and end.all()
    start, allowed, end = transition_constraints(BIOES, "bioes")
    index = {tag: i for i, tag in enumerate(BIOES)}
    assert not end[index["B-PER"]] and not allowed[index["B-PER"], index["O"]] and allowed[index["E-PER"], index["S-PER"]]


def _brute_force(crf: CRF, emissions: torch.Tensor, length: int) -> tuple[torch.Tensor, dict]:
    start, transitions, end = crf._scores()
    scores = {}
    for path in itertools.product(range(emissions.shape[-1]), repeat=length):
        s = start[path[0]] + end[path[-1]] + sum(emissions[t, path[t]] for t in range(length))
        s = s + sum(transitions[path[t - 1], path[t]] for t in range(1, length))
        scores[path] = s
    return torch.logsumexp(torch.stack(list(scores.values())), 0), scores


@torch.no_grad()
def test_crf_matches_brute_force_and_respects_constraints():
    torch.manual_seed(0)
    crf = CRF(*transition_constraints(BIO, "bio"))
    with torch.no_grad():
        crf.transitions.normal_()
        crf.start.normal_()
    emissions = torch.randn(2, 4, len(BIO))
    emissions[:, 1, BIO.index("I-ORG")] += 20  # tempt the decoder into B-PER -> I-ORG, O -> I-ORG, ...
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    tags = torch.tensor([[1, 2, 0, 3], [3, 4, 4, 0]])
    nll = crf.nll(emissions, tags, mask)
    expected = []
    paths = crf.viterbi(emissions, mask)
    marginals = crf.marginals(emissions, mask)
    for row, length in enumerate([4, 3]):
        log_z, scores = _brute_force(crf, emissions[row], length)
        expected.append(log_z - scores[tuple(tags[row, :length].tolist())])
        assert tuple(paths[row]) == max(scores, key=lambda p: scores[p])
        labels = [BIO[i] for i in paths[row]]
        assert repair_tags(labels, "bio") == labels  # the best path is a valid BIO sequence
        for t in range(length):
            per_tag = [sum(float((s - log_z).exp()) for p, s in scores.items() if p[t] == k) for k in range(len(BIO))]
            assert marginals[row, t].tolist() == pytest.approx(per_tag, abs=1e-4)
    assert nll.item() == pytest.approx(torch.stack(expected).mean().item(), abs=1e-3)
    assert marginals[1, 3].abs().sum() == 0


def _tag_features(n=2, t=6, h=8):
    torch.manual_seed(1)
    return {"last_hidden_state": torch.randn(n, t, h), "attention_mask": torch.ones(n, t, dtype=torch.long),
            "label_positions": torch.tensor([[1, 2, 4], [1, 3, -1]])}


@pytest.mark.parametrize("crf", [False, True])
def test_tagging_head_contract(tmp_path, crf):
    head = KINDS["tagging"].head.from_options({"crf": crf}, hidden_size=8, labels=BIO)
    outputs = head(_tag_features())
    assert outputs["logits"].shape == (2, 3, len(BIO)) and outputs["mask"].tolist() == [[True] * 3, [True, True, False]]
    targets = head.targets([["B-PER", "I-PER", "O"], ["B-ORG", "I-ORG"]])
    assert targets.tolist() == [[1, 2, 0], [3, 4, -100]]
    loss = head.loss(outputs, targets)
    loss.backward()
    assert loss.item() > 0 and head.out.weight.grad is not None
    decoded = head.eval().decode(head(_tag_features()))
    assert [len(d["tags"]) for d in decoded] == [3, 2] and all(0 <= s <= 1 for d in decoded for s in d["scores"])
    head.save(tmp_path)
    loaded = Head.load(tmp_path)
    assert loaded.decode(loaded(_tag_features())) == decoded


def test_entity_types_expand_to_tags():
    expand = KINDS["tagging"].head.expand_labels
    assert expand(["PER", "ORG"], {"scheme": "bio"}) == ["O", "B-PER", "I-PER", "B-ORG", "I-ORG"]
    assert expand(["B", "M", "E", "S"], {"scheme": "bmes"}) == ["B", "M", "E", "S"]
    assert expand(BIO, {"scheme": "bio"}) == BIO
    with pytest.raises(ValueError, match="not a BIO tag"):
        KINDS["tagging"].head.from_options({"scheme": "bio"}, hidden_size=8, labels=["O", "X-PER"])


def test_crf_masks_are_derived_not_stored_and_old_files_with_them_still_load(tmp_path):
    """The scheme's transition masks come from the head's config: a saved head holds only trained tensors; a file
    written when the masks were saved loads (its masks checked against the derived ones), a disagreeing one is
    refused."""
    from safetensors.torch import load_file, save_file

    head = KINDS["tagging"].head.from_options({"crf": True}, hidden_size=8, labels=BIO)
    head.save(tmp_path)
    assert not [k for k in load_file(tmp_path / "head.safetensors") if "penalty" in k]
    old = {**head.state_dict(), **{f"crf.{n}": b for n, b in head.crf.named_buffers()},  # the former file layout
           "crf.transition_penalty": head.crf.transition_penalty()}
    save_file({k: v.contiguous() for k, v in old.items()}, str(tmp_path / "head.safetensors"))
    loaded = Head.load(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.crf._scores(), head.crf._scores()))
    old["crf.transition_penalty"] = torch.zeros_like(old["crf.transition_penalty"])  # allows every transition
    save_file({k: v.contiguous() for k, v in old.items()}, str(tmp_path / "head.safetensors"))
    with pytest.raises(HeadLoadError, match="transition_penalty' differs from what the head's config derives"):
        Head.load(tmp_path)


def test_a_low_rank_output_trains_saves_and_loads(tmp_path):
    """`output_rank`: hidden -> rank -> tags instead of hidden -> tags (a smaller head for hundreds of tags)."""
    labels = ["O"] + [f"{p}-T{i}" for i in range(20) for p in ("B", "I")]
    full = KINDS["tagging"].head.from_options({"crf": True}, hidden_size=32, labels=labels)
    small = KINDS["tagging"].head.from_options({"crf": True, "output_rank": 4}, hidden_size=32, labels=labels)
    count = lambda head: sum(p.numel() for name, p in head.named_parameters() if name.startswith("out."))  # noqa: E731
    assert count(full) == 32 * 41 + 41 and count(small) == 32 * 4 + 4 * 41 + 41
    features = {"last_hidden_state": torch.randn(2, 5, 32), "label_positions": torch.tensor([[1, 2, 3, -1], [1, 2, -1, -1]])}
    small.eval()
    outputs = small(features)
    assert outputs["logits"].shape == (2, 4, 41)
    small.save(tmp_path)
    loaded = Head.load(tmp_path)
    assert loaded.config.output_rank == 4 and torch.equal(loaded(features)["logits"], outputs["logits"])
    with pytest.raises(ValueError):
        KINDS["tagging"].head.from_options({"output_rank": 0}, hidden_size=32, labels=labels)


def test_the_crf_stores_only_allowed_transitions_and_reads_files_holding_the_full_matrix(tmp_path):
    """BMES x 44 POS tags allow 8,097 of 31,329 transitions: only those are parameters and bytes on disk. A file
    with the full [from, to] matrix (the layout before) loads into the same head: same Viterbi paths, marginals."""
    from safetensors.torch import load_file, save_file

    kinds = [f"P{i}" for i in range(44)]
    labels = ["O"] + [f"{p}-{k}" for k in kinds for p in ("B", "M", "E", "S")]
    head = KINDS["tagging"].head.from_options({"crf": True}, hidden_size=8, labels=labels)
    allowed = transition_constraints(labels, "bmes")[1]
    assert head.crf.transitions.shape == (int(allowed.sum()),) == (8097,)
    with torch.no_grad():
        head.crf.transitions.normal_()
    matrix = head.crf.transition_matrix()
    assert torch.equal(matrix[allowed], head.crf.transitions) and not matrix[~allowed].any()
    head.save(tmp_path)
    assert load_file(tmp_path / "head.safetensors")["crf.transitions"].shape == (8097,)

    old = {**head.state_dict(), "crf.transitions": matrix + (~allowed) * 0.01}  # the full matrix, as files were
    save_file({k: v.contiguous() for k, v in old.items()}, str(tmp_path / "head.safetensors"))
    loaded = Head.load(tmp_path).eval()
    features = {"last_hidden_state": torch.randn(3, 9, 8),
                "label_positions": torch.tensor([[1, 2, 3, 4, 5, 6, 7], [1, 2, 3, -1, -1, -1, -1], [-1] * 7])}
    head.eval()
    assert loaded.decode(loaded(features)) == head.decode(head(features))
    save_file({**old, "crf.transitions": torch.zeros(5, 5)}, str(tmp_path / "head.safetensors"))
    with pytest.raises(HeadLoadError, match=r"'crf.transitions' has shape \(5, 5\), the config needs \(8097,\)"):
        Head.load(tmp_path)
