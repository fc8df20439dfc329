"""The variant benchmarks run end to end (on the tiny registry) and write their tables."""

from __future__ import annotations

import argparse
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import ner_heads  # noqa: E402
from variants import run_variants, write_table  # noqa: E402


def test_ner_heads_table_compares_tagging_and_span_heads(trained_registry, tmp_path):
    args = argparse.Namespace(registry=str(trained_registry), tasks=["entities"], variants=["softmax", "CRF, all", "30 negatives"],
                              epochs=1.0, max_train_examples=40, max_eval_examples=20)
    rows = run_variants(args, ner_heads.VARIANTS)
    assert [r["variant"] for r in rows] == ["tagging, softmax", "tagging, softmax, all sub-words", "tagging, CRF, all sub-words",
                                            "span-based (SpERT), width <= 8, 30 negatives"]
    assert [r["metric"] for r in rows] == ["entity_f1"] * 3 + ["span_f1"]
    assert all(0.0 <= r["score"] <= 1.0 and r["trainable"] > 0 and r["bytes"] > 0 for r in rows)
    text = write_table(tmp_path / "ner", "header", rows, {"tasks": ["entities"]}, extra_columns=("precision", "recall"))
    assert text.count("\n| entities |") == 4 and (tmp_path / "ner.json").is_file()


def test_precision_benchmark_compares_every_trained_task(trained_registry, tmp_path):
    import precision

    results = precision.main(["--registry", str(trained_registry), "--examples", "6", "--rounds", "2", "--out", str(tmp_path)])
    assert set(results["tasks"]) == {"sentiment", "paraphrase", "similarity", "entities", "reader", "spans", "relations", "joint", "fill"}
    assert list(results["speed_vs_float32"]) == ["float32", "bfloat16"] and results["speed_vs_float32"]["float32"] == 1.0
    for row in results["tasks"].values():
        assert row["same_as_baseline"]["float32"] == 1.0 and 0.0 <= row["same_as_baseline"]["bfloat16"] <= 1.0
        assert set(row["scores"]) == {"float32", "bfloat16"}
    text = (tmp_path / "precision.md").read_text()
    assert "| sentiment | accuracy | 6 |" in text and (tmp_path / "precision.png").stat().st_size > 0
    assert results["command"] == f"python benchmarks/precision.py --registry {trained_registry} --examples 6 --rounds 2"


def test_frontier_scores_every_stored_variant_and_resumes(trained_registry, tmp_path, monkeypatch):
    """Cells store their own variants: a recipe stored as the shipped ones are (int4 LoRA, which (IA)3 cannot be)
    trains every setting all the same."""
    import json
    import shutil

    import frontier
    import yaml

    shutil.copytree(trained_registry.parent, tmp_path / "registry")
    registry = tmp_path / "registry" / trained_registry.name
    raw = yaml.safe_load(registry.read_text())
    task = next(t for t in raw["tasks"] if t["name"] == "sentiment")
    task["train"] = {**task.get("train", {}), "storage": {"adapter": "int4", "head": "float16"}}
    registry.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = tmp_path / "frontier"
    argv = ["--registry", str(registry), "--tasks", "sentiment", "--settings", "lora_qv_r1", "ia3", "probe",
            "--seeds", "1", "--max-train-examples", "40", "--max-eval-examples", "20", "--out", str(out)]
    frontier.main(argv)
    cells = [json.loads(line) for line in (tmp_path / "frontier.cells.jsonl").read_text().splitlines()]
    assert [(c["setting"], sorted(c["variants"])) for c in cells] == [
        ("lora_qv_r1", ["float16", "float32", "int4", "int8"]), ("ia3", ["float16", "float32"]), ("probe", ["float32"])]
    lora = cells[0]["variants"]
    assert lora["int4"]["bytes"] < lora["int8"]["bytes"] < lora["float16"]["bytes"] < lora["float32"]["bytes"]
    assert all(0.0 <= v["score"] <= 1.0 and c["eval_examples"] == 20 for c in cells for v in c["variants"].values())
    points = json.loads(out.with_suffix(".json").read_text())["points"]
    assert len(points) == 7 and any(p["frontier"] for p in points if p["setting"] != "probe")
    assert (tmp_path / "frontier_en.png").stat().st_size > 0 and "| sentiment | ia3" in out.with_suffix(".md").read_text()
    monkeypatch.setattr(frontier, "run_cell", lambda *args: (_ for _ in ()).throw(AssertionError("retrained")))
    frontier.main(argv)  # every cell is in the log: nothing trains again


def test_a_field_added_at_its_neutral_value_keeps_logged_cells_valid():
    """`train.runtime` and `data.drop` came after days of frontier and bench cells: at float32 / {} (how they
    trained) they are left out of fingerprints; int8 or a drop list trains differently, so they count."""
    from hub.bench.cells import fingerprinted_spec
    from hub.registry import load_registry

    spec = load_registry(REPO / "registry.yaml").task("sst2")
    assert "runtime" not in fingerprinted_spec(spec)["train"] and "drop" not in fingerprinted_spec(spec)["data"]
    int8 = spec.model_copy(update={"train": spec.train.model_copy(update={"runtime": "int8"})})
    assert fingerprinted_spec(int8)["train"]["runtime"] == "int8"
    assert spec.data is not None
    dropping = spec.model_copy(update={"data": spec.data.model_copy(update={"drop": {"label": ["-"]}})})
    assert fingerprinted_spec(dropping)["data"]["drop"] == {"label": ["-"]}


def test_the_committed_frontier_table_is_built_from_cells_the_code_still_accepts():
    """Every point of benchmarks/results/frontier.json comes from logged cells whose fingerprint still holds, so a
    resumed run keeps them (a recipe change that invalidates them must rerun them, not silently drop them)."""
    import json

    import frontier
    from hub.registry import load_registry

    results = REPO / "benchmarks" / "results"
    budget = frontier.Budget(2000, 2000, tuple(sorted(frontier.TASK_TRAIN_EXAMPLES.items())))
    done = frontier.read_log(results / "frontier.cells.jsonl", load_registry(REPO / "registry.yaml"),
                             frontier.grid(), budget)
    points = json.loads((results / "frontier.json").read_text())["points"]
    stale = sorted({(p["task"], p["setting"], seed) for p in points for seed in p["seeds"]} - set(done))
    assert points and not stale, f"cells in the table that a rerun would train again: {stale}"


def test_tapt_pretrains_per_objective_fine_tunes_from_each_and_resumes(trained_registry, tmp_path, capsys):
    import json

    import tapt

    argv = ["--registry", str(trained_registry), "--tasks", "sentiment", "--budgets", "30", "60", "--objectives", "mlm",
            "span", "--seeds", "42", "--corpus-texts", "50", "--max-eval-examples", "20", "--work", str(tmp_path / "work"),
            "--out", str(tmp_path / "tapt")]
    text = tapt.main(argv)
    cells = [json.loads(line) for line in (tmp_path / "tapt.cells.jsonl").read_text().splitlines()]
    assert sorted(c["key"] for c in cells if c["kind"] == "pretrain") == ["pretrain/sentiment/mlm", "pretrain/sentiment/span"]
    tuned = {(c["start"], c["budget"]): c for c in cells if c["kind"] == "finetune"}
    assert set(tuned) == {(s, b) for s in ("scratch", "mlm", "span") for b in (30, 60)}
    assert all(c["train_examples"] == c["budget"] and c["eval_examples"] == 20 for c in tuned.values())
    assert all(0.0 <= c["score"] <= 1.0 for c in tuned.values())
    assert all(c["corpus_texts"] == 50 for c in cells if c["kind"] == "pretrain")
    assert text.count("| sentiment | 30 |") == 3 + 1 and "| sentiment | mlm | 50 |" in text  # 3 starts, the summary
    assert "| task | labelled | seeds | scratch | mlm | span |" in text
    summary = next(line for line in text.splitlines() if line.startswith("| sentiment | 30 | 42 |"))
    mlm_gain = 100 * (tuned[("mlm", 30)]["score"] - tuned[("scratch", 30)]["score"])
    assert f"{tuned[('mlm', 30)]['score']:.3f} ({mlm_gain:+.1f})" in summary
    assert (tmp_path / "tapt.png").stat().st_size > 0
    rows = json.loads((tmp_path / "tapt.json").read_text())["rows"]
    scratch = next(r for r in rows if r["start"] == "scratch" and r["budget"] == 30)["mean"]
    mlm = next(r for r in rows if r["start"] == "mlm" and r["budget"] == 30)
    assert mlm["gain"] == mlm["mean"] - scratch
    tapt.main(argv)  # resumes: every cell is in the log, nothing runs again
    assert len((tmp_path / "tapt.cells.jsonl").read_text().splitlines()) == len(cells)
    assert "[tapt]" not in capsys.readouterr().out.split("| task |")[-1]


def test_tapt_summary_compares_starts_on_the_seeds_they_all_have():
    import tapt

    def cell(start, seed, score):
        return {"kind": "finetune", "task": "t", "budget": 200, "start": start, "seed": seed, "score": score}

    cells = [cell("scratch", 42, 0.80), cell("mlm", 42, 0.75), cell("scratch", 43, 0.70)]  # seed 43 half run
    assert tapt.summary(tapt.table(cells))[2] == "| t | 200 | 42 | 0.800 | 0.750 (-5.0) |"
    cells.append(cell("mlm", 43, 0.72))
    assert tapt.summary(tapt.table(cells))[2] == "| t | 200 | 42, 43 | 0.750 | 0.735 (-1.5) |"


def test_word_in_context_separation_counts_pairs_of_each_kind():
    import numpy as np
    import word_in_context

    similarity = np.array([[1.0, 0.9, 0.2], [0.9, 1.0, 0.4], [0.2, 0.4, 1.0]])
    result = word_in_context.separation(similarity, [0, 0, 1])
    assert result["same_sense"] == 0.9 and result["cross_sense"] == 0.3 and result["separation"] == 0.6
    assert result["nearest_same_sense"] == round(2 / 3, 4)  # the lone third sentence's nearest is of the other sense


def test_spert_ablation_trains_every_variant(trained_registry, tmp_path):
    import spert_ablation

    text = spert_ablation.main(["--registry", str(trained_registry), "--tasks", "joint", "--max-train-examples", "40",
                                "--epochs", "1", "--variants", "SpERT", "context: none", "--out", str(tmp_path / "ab")])
    assert text.count("\n| joint |") == 2 and "| joint_f1 |" in text and (tmp_path / "ab.json").is_file()


def test_spert_failures_puts_each_wrong_relation_in_its_class(trained_registry, tmp_path):
    import spert_failures

    good, bad, other = (0, 1, "GOOD"), (3, 5, "BAD"), (6, 7, "BAD")
    reference = [{"entities": [good, bad], "relations": [(good, bad, "Beats")]},
                 {"entities": [good], "relations": []}]
    prediction = [{"entities": [good, (3, 4, "BAD"), other],
                   "relations": [(good, (3, 4, "BAD"), "Beats"),  # the tail off by a word
                                 (bad, good, "Beats"), (good, other, "Beats")]},  # reversed; a pair never related
                  {"entities": [good, other], "relations": [(good, other, "Beats")]}]
    report = spert_failures.failures(prediction, reference)
    assert report["predicted_relations"] == 4 and report["on_sentences_without_gold_relation"] == 1
    assert {k: v["count"] for k, v in report["false_positives"].items()} == {"no such pair": 2, "boundary": 1,
                                                                            "direction": 1}
    assert {k: v["count"] for k, v in report["false_negatives"].items()} == {"boundary": 1}
    written = spert_failures.main(["--registry", str(trained_registry), "--task", "joint", "--out", str(tmp_path / "f")])
    assert written["sentences"] == 40 and (tmp_path / "f.md").read_text().startswith("# SpERT failure modes")


def test_relation_methods_compares_the_three_methods(trained_registry, tmp_path):
    import relation_methods

    text = relation_methods.main(["--registry", str(trained_registry), "--tasks", "relations", "--max-train-examples",
                                  "40", "--epochs", "1", "--out", str(tmp_path / "rel")])
    assert text.count("\n| relations |") == 3 and "position embeddings" in text


def test_fill_mask_cloze_rows_mask_one_known_chinese_character_each():
    """benchmarks/fill_mask_zh.py scores on cloze rows: one CJK character of each text (one the tokenizer knows) as
    [MASK], the character its label; texts without one give no row; the same seed, the same rows."""
    import fill_mask_zh
    from transformers import AutoTokenizer

    import hub
    from hub.backbone import resolve_source
    from hub.registry import load_registry

    registry = load_registry(hub.default_registry_path(), strict_adapters=False)
    tokenizer = AutoTokenizer.from_pretrained(resolve_source(registry.backbone("zh"), registry))
    texts = ["今天天气很好。", "Hello, world!", "我喜欢吃苹果，2024年。", "𠀀"]  # 𠀀: an ideograph the vocabulary lacks
    rows = fill_mask_zh.cloze_rows(texts, tokenizer, seed=0)
    assert len(rows) == 2 and rows == fill_mask_zh.cloze_rows(texts, tokenizer, seed=0)
    for row, text in zip(rows, [texts[0], texts[2]]):
        assert row["text"].count("[MASK]") == 1 and row["text"].replace("[MASK]", row["label"]) == text
        assert "\u4e00" <= row["label"] <= "\u9fff" and tokenizer.convert_tokens_to_ids(row["label"]) != tokenizer.unk_token_id
