"""`hub import-peft`: a plain PEFT LoRA adapter for a BERT sequence / token classifier becomes a task that
answers exactly as the PEFT model it came from."""

from __future__ import annotations

import json

import pytest
import torch

from hub.errors import AdapterError

from conftest import tiny_registry, write_registry

TEXTS = ["the movie was good", "a dull book", "good plot , bad end"]


def plain_peft_adapter(folder, backbone_dir, model_class: str, labels: int, seed: int = 1):
    """A PEFT adapter saved as anyone would make it: random non-zero LoRA on query/value, classifier trained alongside."""
    import transformers
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = getattr(transformers, model_class).from_pretrained(backbone_dir, num_labels=labels)
    task_type = "SEQ_CLS" if "Sequence" in model_class else "TOKEN_CLS"
    peft_model = get_peft_model(model, LoraConfig(task_type=task_type, r=4, target_modules=["query", "value"], init_lora_weights=False))
    with torch.no_grad():
        peft_model.base_model.model.classifier.modules_to_save["default"].weight.normal_(0, 1.0)
    peft_model.peft_config["default"].base_model_name_or_path = "tests/tiny-bert"  # the id the registry knows the backbone by
    peft_model.save_pretrained(folder)
    return peft_model.eval()


@pytest.fixture
def user_registry(tmp_path, tiny_backbone_dir):
    return write_registry(tmp_path, tiny_registry(tmp_path, tiny_backbone_dir, tasks=[]))


def test_sequence_classifier_answers_like_the_peft_model(tmp_path, tiny_backbone_dir, user_registry):
    import hub
    from hub.interop import import_peft
    from transformers import AutoTokenizer

    peft_model = plain_peft_adapter(tmp_path / "peft_seq", tiny_backbone_dir, "BertForSequenceClassification", 3)
    task = import_peft(user_registry, str(tmp_path / "peft_seq"), "imported", ["neg", "neu", "pos"])
    assert task.kind == "classification" and task.head["pooling"] == "pooler"

    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone_dir)
    with torch.no_grad():
        probs = peft_model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits.softmax(-1)
    results = hub.Hub.load(user_registry).run("imported", TEXTS)
    for result, row in zip(results, probs):
        assert result["label"] == ["neg", "neu", "pos"][int(row.argmax())]
        assert result["score"] == pytest.approx(float(row.max()), abs=1e-5)


def test_token_classifier_answers_like_the_peft_model(tmp_path, tiny_backbone_dir, user_registry):
    import hub
    from hub.interop import import_peft
    from transformers import AutoTokenizer

    tags = ["ADJ", "DET", "NOUN"]  # plain tags: the hub's result is the argmax at each word's first sub-word, unrepaired
    peft_model = plain_peft_adapter(tmp_path / "peft_tok", tiny_backbone_dir, "BertForTokenClassification", 3, seed=2)
    task = import_peft(user_registry, str(tmp_path / "peft_tok"), "tagger", tags)
    assert task.kind == "tagging" and task.metric == "entity_f1"

    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone_dir)
    served = hub.Hub.load(user_registry)
    for text in TEXTS:
        words = text.split()
        encoded = tokenizer(words, is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            logits = peft_model(**encoded).logits[0]
        expected = [tags[int(logits[encoded.word_to_tokens(i).start].argmax())] for i in range(len(words))]
        result = served.run("tagger", tuple(words))
        assert result["tokens"] == words and result["tags"] == expected


def test_bad_imports_are_refused_and_leave_the_registry_untouched(tmp_path, tiny_backbone_dir, user_registry):
    from hub.interop import import_peft

    before = user_registry.read_text()
    plain_peft_adapter(tmp_path / "peft_seq", tiny_backbone_dir, "BertForSequenceClassification", 3)
    with pytest.raises(AdapterError, match="maps 32 features to 3 labels"):
        import_peft(user_registry, str(tmp_path / "peft_seq"), "wrong_labels", ["neg", "pos"])
    (tmp_path / "peft_seq" / "adapter_model.safetensors").rename(tmp_path / "peft_seq" / "moved")
    (tmp_path / "peft_seq" / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(AdapterError, match="pickled adapter_model.bin is never loaded"):
        import_peft(user_registry, str(tmp_path / "peft_seq"), "pickled", ["neg", "neu", "pos"])
    config = tmp_path / "peft_seq" / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "task_type": "CAUSAL_LM"}))
    (tmp_path / "peft_seq" / "moved").rename(tmp_path / "peft_seq" / "adapter_model.safetensors")
    with pytest.raises(AdapterError, match="only LORA adapters for SEQ_CLS or TOKEN_CLS"):
        import_peft(user_registry, str(tmp_path / "peft_seq"), "causal", ["neg", "neu", "pos"])
    with pytest.raises(AdapterError, match="neither a folder nor a Hub repo id"):
        import_peft(user_registry, str(tmp_path / "no_such_folder"), "missing", ["neg", "neu", "pos"])
    assert user_registry.read_text() == before and not (tmp_path / "adapters").exists()
