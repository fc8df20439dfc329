"""Head weights files stored as int8 with a scale per row (heads/storage.py): the layout on disk, what it reads back,
and files whose int8 tensors and scales do not fit together refused by name."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from heads import KINDS, Head, HeadLoadError
from heads.storage import INT8_LAYOUT, SCALE_SUFFIX, dequantized, quantize_rows, stored_storage

POS = ["O"] + [f"{p}-P{i}" for i in range(44) for p in ("B", "M", "E", "S")]  # People's Daily POS x BMES


def _tagging_head() -> Head:
    torch.manual_seed(0)
    head = KINDS["tagging"].head.from_options({"crf": True}, hidden_size=64, labels=POS)
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.normal_()
        head.out.weight[3] *= 0.01  # a row far smaller than the others keeps its own precision
        head.out.weight[5] = 0.0  # and an all-zero row stays zero
    return head.eval()


def test_int8_file_layout_and_bytes(tmp_path):
    head = _tagging_head()
    head.save(tmp_path, "int8")
    path = tmp_path / "head.safetensors"
    with safe_open(str(path), framework="pt") as file:
        assert file.metadata() == {"kind": "tagging", "storage": INT8_LAYOUT}
    tensors = load_file(path)
    assert tensors["out.weight"].dtype == torch.int8 and tensors["out.weight" + SCALE_SUFFIX].shape == (177,)
    assert tensors["crf.transitions"].shape == (8097,) and tensors["crf.transitions" + SCALE_SUFFIX].shape == (1,)
    values = sum(t.numel() for name, t in tensors.items() if not name.endswith(SCALE_SUFFIX))
    assert values == sum(p.numel() for p in head.parameters())
    assert path.stat().st_size < values * 1.1  # about a byte per parameter
    assert stored_storage(path) == "int8"
    head.save(tmp_path, "float16")
    assert stored_storage(path) == "float16"
    head.save(tmp_path)
    assert stored_storage(path) == "float32"


def test_int8_reads_back_each_row_at_its_own_scale(tmp_path):
    head = _tagging_head()
    head.save(tmp_path, "int8")
    loaded = Head.load(tmp_path)
    weight, back = head.out.weight, loaded.out.weight
    for row in (0, 3):
        assert (back[row] - weight[row]).abs().max() <= weight[row].abs().max() / 254 + 1e-8
    assert not back[5].any()
    values, scale = quantize_rows(weight.detach())
    assert torch.equal(back, values.float() * scale[:, None])  # served exactly as dequantized
    features = {"last_hidden_state": torch.randn(2, 7, 64), "label_positions": torch.tensor([[1, 2, 3, 4, 5], [1, 2, -1, -1, -1]])}
    assert [r["tags"] for r in loaded.decode(loaded(features))] == [r["tags"] for r in head.decode(head(features))]


@pytest.mark.parametrize(("change", "message"), [
    (lambda t, m: (t, {}), "without the file's storage metadata"),
    (lambda t, m: ({k: v for k, v in t.items() if k != "out.weight" + SCALE_SUFFIX}, m), "do not pair up: \\['out.weight'\\]"),
    (lambda t, m: ({**t, "out.extra" + SCALE_SUFFIX: torch.ones(1)}, m), "do not pair up: \\[.out.extra.\\]"),
    (lambda t, m: ({**t, "out.weight" + SCALE_SUFFIX: torch.ones(3)}, m), "'out.weight': its scale must be float32 of shape \\(177,\\)"),
    (lambda t, m: ({**t, "out.weight" + SCALE_SUFFIX: torch.ones(177, dtype=torch.float64)}, m), "float64"),
    (lambda t, m: ({**t, "out.weight" + SCALE_SUFFIX: torch.full((177,), float("nan"))}, m), "finite and not negative"),
    (lambda t, m: ({**t, "out.weight" + SCALE_SUFFIX: -torch.ones(177)}, m), "finite and not negative"),
])
def test_int8_files_that_do_not_fit_together_are_refused_by_name(tmp_path, change, message):
    _tagging_head().save(tmp_path, "int8")
    path = tmp_path / "head.safetensors"
    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata()
    tensors, metadata = change(load_file(path), metadata)
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(HeadLoadError, match=message):
        Head.load(tmp_path)


def test_float_files_need_no_metadata():
    assert dequantized({"w": torch.ones(2, dtype=torch.float16)}, None)["w"].dtype == torch.float32


def test_a_served_int8_pos_head_holds_about_its_file_bytes_and_answers_as_loaded(tmp_path):
    """The head that made int8 worth having (177 BMES x POS tags, a CRF): served (`resident`), its output layer and
    transitions stay int8, so it holds about its file's bytes instead of 4x; answers are those of the float32 load."""
    _tagging_head().save(tmp_path, "int8")
    loaded, served = Head.load(tmp_path), Head.load(tmp_path, resident=True)
    held = lambda head: sum(t.numel() * t.element_size() for t in [*head.parameters(), *head.buffers()])  # noqa: E731
    masks = [b for name, b in served.named_buffers() if name.endswith(("_allowed", "_penalty"))]  # the scheme's
    derived = sum(t.numel() * t.element_size() for t in masks)
    file_bytes = (tmp_path / "head.safetensors").stat().st_size
    assert held(served) - derived <= 1.2 * file_bytes < held(loaded) - derived
    assert served.crf.transitions_stored.dtype == served.out.stored.dtype == torch.int8
    features = {"last_hidden_state": torch.randn(3, 9, 64),
                "label_positions": torch.tensor([[1, 2, 3, 4, 5, 6], [1, 2, -1, -1, -1, -1], [1, 3, 5, 7, -1, -1]])}
    with torch.inference_mode():
        expected, outputs = loaded(features), served(features)
        assert torch.equal(expected["logits"], outputs["logits"])
        assert served.decode(outputs) == loaded.decode(expected)
        assert torch.equal(served.crf.marginals(outputs["logits"], outputs["mask"]),
                           loaded.crf.marginals(expected["logits"], expected["mask"]))


def test_heads_kept_as_stored_answer_rows_of_many_tasks_together_as_loaded(tmp_path):
    """The router answers rows of classification heads of one shape in one matmul (`forward_many`): heads kept
    float16 / int8 in memory give there what their float32 loads give."""
    kind = KINDS["classification"].head
    loaded, served = [], []
    for i, storage in enumerate(["float16", "int8", "float32"]):
        torch.manual_seed(i)
        head = kind.from_options({}, hidden_size=64, labels=["negative", "positive"])
        folder = tmp_path / f"h{i}"
        folder.mkdir()
        head.save(folder, storage)
        loaded.append(Head.load(folder))
        served.append(Head.load(folder, resident=True))
    assert loaded[0].batch_key() == served[0].batch_key() is not None
    features = {"last_hidden_state": torch.randn(5, 7, 64), "attention_mask": torch.ones(5, 7, dtype=torch.long),
                "pooler_output": torch.randn(5, 64)}
    owner = torch.tensor([2, 0, 1, 1, 0])
    with torch.inference_mode():
        expected = kind.forward_many(loaded, owner, features)["logits"]
        found = kind.forward_many(served, owner, features)["logits"]
    assert torch.equal(found, expected)
