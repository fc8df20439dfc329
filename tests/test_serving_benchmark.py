"""The serving benchmarks' building blocks: their variants compute the same answers, every adapter method runs
through the benchmark, and the load test's comparison is strict where it must be."""

from __future__ import annotations

import gc
import json
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, needs_shared_data

sys.path.insert(0, str(REPO / "benchmarks"))

from load_test import same_answer  # noqa: E402


def test_hub_peft_and_merged_full_models_give_the_same_answers(tmp_path):
    """The benchmark compares speed only if B (the hub), C (PEFT set_adapter) and D (LoRA merged into
    full copies) answer alike: generated adapter folders served three ways."""
    import serving
    from serving_setup import english_backbone, mixed_requests, write_registry

    import hub

    backbone, entry = english_backbone()
    registry = write_registry(tmp_path, entry, 3, "all", backbone=backbone)
    texts = ["A gripping, funny film.", "The plot never goes anywhere.", "Stocks fell sharply on Monday.", "ok", "It rained."]
    served = hub.Hub.load(registry)
    folders = serving.adapter_folders(registry, 3)
    location, device = backbone.location, backbone.device
    variants = serving.Variants(texts, {"3": served}, {3: serving.peft_model(folders, location, device)},
                                {3: serving.full_models(folders, location, device)})
    assert {task for task, _ in mixed_requests(texts, 3)} == {"t0000", "t0001", "t0002"}
    hub_answers = variants.hub_mixed("3", 3)
    for other in (variants.naive(3), variants.full_models(3)):
        agreement = serving.agreement(hub_answers, other)
        assert agreement["same_label"] == 1.0 and agreement["max_score_diff"] < 1e-4
    plain = [served.run("t0000", text) for text in texts]  # the adapters really differ from each other
    assert [served.run("t0001", text)["score"] for text in texts] != pytest.approx([r["score"] for r in plain], abs=1e-3)


def in_process_probe(kind, registry, texts_file, count, every, device, dtype=None):
    """serving.run_probe without the fresh process (seconds of imports each): the numbers mean nothing, the code runs."""
    import serving

    try:
        return serving.probe(kind, registry, json.loads(texts_file.read_text()), count, every, device, dtype)
    finally:
        gc.unfreeze()  # the frozen-load probe froze this test process's objects


@needs_shared_data  # the benchmark's requests are real GLUE dev texts
def test_every_method_mixed_in_one_run_at_tiny_sizes(tmp_path, monkeypatch):
    """`serving.py --method mix --storage int4` end to end at tiny sizes: task i has the (i mod M)-th method's folder,
    stored as `hub train` stores it (LoRA int4, the others float16, heads float16), B answers every request as the
    hub answers it alone, and the report skips LoRA's own variants, saying so."""
    import serving
    from serving_setup import mix_methods

    from hub.methods import METHODS

    monkeypatch.setattr(serving, "run_probe", in_process_probe)
    args = serving.parse_args(["--method", "mix", "--storage", "int4", "--requests", "16", "--rounds", "1",
                               "--resident", "64"])
    work = tmp_path / "work"
    work.mkdir()
    results = serving.measure(args, work)
    methods = mix_methods()
    assert results["methods"] == methods == sorted(METHODS) and results["targets"] == "qv"
    folders = serving.adapter_folders(next(work.glob("registry_mix_*_int4_64.yaml")), 64)
    types = [json.loads((folder / "adapter_config.json").read_text())["peft_type"] for folder in folders]
    assert types == [METHODS[methods[i % len(methods)]].peft_type for i in range(64)]
    for folder in folders[: len(methods)]:
        names = {path.name for path in folder.iterdir()}
        quantized = folder.parent.name.startswith("lora_")
        assert ("adapter_model.quantized.safetensors" in names) == quantized, folder
        assert folder.parent.name.endswith("_int4" if quantized else "_float16")
        assert {t.dtype for t in load_file(folder / "head.safetensors").values()} == {torch.float16}
    (check,) = results["checks"].values()
    assert check["same_label"] == 1.0 and check["max_score_diff"] < 1e-4
    assert set(results["seconds"]) == {"A", "B16", "B64", "B16_resident", "B16_float32", "B64_float32"}
    assert "peft_load" not in results["probes"]
    # the first task of each method is loaded before timing: its one-time setup is reported apart
    probes = results["probes"]
    assert probes["ours_memory"]["startup_tasks"] == len(methods)
    assert probes["ours_load"]["seconds"][0][0] == len(methods) + 1 and len(probes["ours_load"]["startup_seconds"]) == len(methods) - 1
    text = serving.report(results, tmp_path / "mix")
    assert "L, C and D are not run" in text and "| the hub: one backbone + 1,000 tasks" in text
    assert "(IA)3 float16, LoRA int4, VeRA float16 files, heads float16" in text.splitlines()[0]
    assert "| B with int4 files / B with float32 files at K=16, K=64 | ~1.0 |" in text
    assert all((tmp_path / f"mix.{suffix}").is_file() for suffix in ("md", "json", "png"))


@needs_shared_data  # the benchmark's requests are real GLUE dev texts
def test_runtimes_add_a_and_b_per_runtime_and_the_fastest_pair(tmp_path, monkeypatch):
    """`--runtimes int8`: A and B at K=16 in the int8 runtime, timed with the others, B in int8 checked against
    float32 B, and the target table sets the fastest B against the fastest A."""
    import serving

    monkeypatch.setattr(serving, "run_probe", in_process_probe)
    pytest.importorskip("onnxruntime")
    args = serving.parse_args(["--method", "ia3", "--runtimes", "int8", "--onnx", "int8", "int8_per_token",
                               "--requests", "16", "--rounds", "1", "--resident", "64"])
    assert serving.command_line(args) == ("python benchmarks/serving.py --method ia3 --resident 64 --rounds 1 "
                                          "--requests 16 --runtimes int8 --onnx int8 int8_per_token")
    work = tmp_path / "work"
    work.mkdir()
    results = serving.measure(args, work)
    assert {"A_int8", "B16_int8"} <= set(results["seconds"]) and results["runtimes"] == ["int8"]
    check = results["checks"]["B16 in int8 vs float32"]
    assert check["same_label"] >= 0.9 and check["max_score_diff"] < 0.1  # random weights: near, not equal
    text = serving.report(results, tmp_path / "runtimes")
    assert "| A: backbone alone, int8 |" in text and "| B: hub, 16 tasks mixed, int8 |" in text
    assert "/ fastest A (A: backbone alone" in text and "| B/A in int8 at K=16 | >= 0.95 |" in text
    assert {"hub16", "hub16_int8"} <= set(results["probes"]) and "full16" not in results["probes"]  # IA3: no D
    assert "| int8 | " in text and "server memory: backbone + 16 tasks" in text
    if sys.platform == "linux":  # resident memory split into anonymous and file pages, adding up to the RSS
        probe = results["probes"]["hub16_int8"]
        assert abs(probe["net_anonymous"] + probe["net_file"] - probe["net_memory"]) < 8e6
        assert "of which file pages" in text
    assert "| A: backbone alone, ONNX Runtime int8, a scale per token |" in text
    # ONNX Runtime's own int8 lets a row's output depend on its batch: when it is the fastest A, B is also set
    # against the fastest A that keeps rows independent
    results["seconds"]["A_onnx_int8"] = [1e-6 for _ in results["seconds"]["A"]]
    fastest = serving.summarize(results)["fastest"]
    assert fastest["A"] == "A_onnx_int8" and fastest["A_row_independent"] != "A_onnx_int8"
    assert "keeps each row independent of its batch" in serving.report(results, tmp_path / "fastest")


def test_peft_loads_the_written_folders_of_every_method_it_implements(tmp_path):
    """Folders written for a method other than LoRA are what PEFT's own load_adapter reads (where PEFT has it)."""
    import serving
    from serving_setup import english_backbone, write_registry

    from hub.methods import METHODS

    backbone, entry = english_backbone()
    (tmp_path / "texts.json").write_text("[]")
    for method in sorted(m for m in METHODS if m != "lora" and serving.peft_reads(m, None)):
        registry = write_registry(tmp_path, entry, 3, method=method, backbone=backbone)
        loaded = in_process_probe("peft_load", registry, tmp_path / "texts.json", 3, 1, backbone.device)
        assert [n for n, _ in loaded["seconds"]] == [2, 3] and loaded["lora_file_bytes"] > 0, method


def test_the_command_line_names_each_method_s_results():
    import serving

    assert serving.shape_name(serving.parse_args([])) == "qv"
    assert serving.shape_name(serving.parse_args(["--method", "mix", "--targets", "all"])) == "mix_all"
    assert serving.shape_name(serving.parse_args(["--method", "ia3"])) == "ia3_default"
    vera = serving.parse_args(["--method", "vera", "--option", "r=1024"])
    assert serving.shape_name(vera) == "vera_r-1024" and vera.options == {"r": 1024}
    assert serving.command_line(vera) == "python benchmarks/serving.py --method vera --option r=1024"
    shipped = serving.parse_args(["--targets", "all", "--storage", "int4"])
    assert serving.shape_name(shipped) == "all_int4"
    assert serving.command_line(shipped) == "python benchmarks/serving.py --targets all --storage int4"
    assert not serving.peft_reads("lora", "int4") and serving.peft_reads("lora", "float16")
    assert serving.peft_reads("ia3", "int4")  # (IA)3 has no int4: its folders stay float16, which PEFT reads
    for refused in (["--method", "lora", "--option", "r=4"], ["--method", "ia3", "--targets", "all"],
                    ["--method", "vera", "--option", "r=0"], ["--method", "vera", "--option", "r"]):
        with pytest.raises(SystemExit):
            serving.parse_args(refused)


def test_load_test_compares_exactly_except_float_noise():
    answer = {"task": "conll2003", "tags": ["B-PER", "O"], "entities": [{"label": "PER", "start": 0, "end": 4, "score": 0.91}]}
    noisy = {"task": "conll2003", "tags": ["B-PER", "O"], "entities": [{"label": "PER", "start": 0, "end": 4, "score": 0.91003}]}
    assert same_answer(answer, noisy)
    assert not same_answer(answer, {**noisy, "tags": ["B-ORG", "O"]})
    assert not same_answer(answer, {**answer, "entities": []})
    assert not same_answer({"score": 0.9}, {"score": 0.91})
    assert not same_answer({"value": 1.0}, {"value": "1.0"})


@needs_shared_data  # the benchmark's requests are real GLUE dev texts
def test_onnx_lora_benchmark_checks_every_per_row_pass_against_torch(tmp_path):
    """benchmarks/onnx_lora.py at tiny sizes: ONNX Runtime's per-row LoRA graph gives what the hub's float32 hooks
    give, and the table has every variant."""
    pytest.importorskip("onnxruntime")
    import onnx_lora

    found = onnx_lora.main(["--texts", "16", "--rounds", "1", "--out", str(tmp_path / "onnx_lora")])
    checks = found["checks_vs_torch_float32_lora"]
    assert checks["L_onnx_float32"]["max_abs_diff"] < 1e-3 and checks["L_torch_float32"]["max_abs_diff"] == 0
    assert checks["L_onnx_int8_per_token"]["token_cosine"] > 0.99 and checks["L_torch_bfloat16"]["token_cosine"] > 0.99
    assert set(found["speed_vs_torch_float32"]) == set(onnx_lora.LABELS)
    text = (tmp_path / "onnx_lora.md").read_text()
    assert text.count("\n| L: ") == 5 and "The fastest ONNX Runtime pass with per-row LoRA" in text
