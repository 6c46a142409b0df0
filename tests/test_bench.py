"""The benchmarks' own logic: real LLaVA-1.5-7B sizes for the random model, the generation
throughput section (run on a CPU with the tiny shape), and the merge benchmark's floor and
targets table on a one-layer set."""
import json
import os

import pytest
import torch

from bench.eval_speed import bench_random_model


def test_llava_7b_sizes_are_the_real_ones():
    """LLaVA-1.5-7B = Llama-2-7B (6,738,415,616 parameters) + the mlp2x_gelu projector
    (1024→4096→4096: 20,979,712) + CLIP ViT-L/14 at 336 px (303,507,456), counted on the meta
    device (nothing allocated)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM
    from llava.model.tiny import LLAVA_V15_7B, tiny_llava_config

    with torch.device("meta"):
        lm = LlavaLlamaForCausalLM(tiny_llava_config(LLAVA_V15_7B, "clip"))
        s = LLAVA_V15_7B
        clip = CLIPVisionModel(CLIPVisionConfig(
            hidden_size=s.vision_hidden_size, intermediate_size=s.vision_intermediate_size,
            num_hidden_layers=s.vision_layers, num_attention_heads=s.vision_heads, image_size=s.image_size,
            patch_size=s.patch_size))
    projector = sum(p.numel() for p in lm.get_model().mm_projector.parameters())
    assert projector == 20_979_712
    assert sum(p.numel() for p in lm.parameters()) - projector == 6_738_415_616
    assert sum(p.numel() for p in clip.parameters()) == 303_507_456


def test_random_model_throughput_rows(tmp_path):
    rows = bench_random_model(tmp_path, "tiny", "cpu", "float32", ["sdpa", "eager"], [1, 3], new_tokens=5)
    assert [(r["attn"], r["batch_size"]) for r in rows] == [("sdpa", 1), ("sdpa", 3), ("eager", 1), ("eager", 3)]
    for r in rows:
        assert r["new_tokens"] == 5 and r["wall_s"] > 0 and r["peak_gpu_gb"] is None
        assert r["tokens_per_s"] == pytest.approx(r["batch_size"] * 5 / r["wall_s"])
        assert r["row0_equals_bs1"]  # same prompt and image, fp32: batching does not change the tokens
    assert rows[0]["speedup"] == 1.0 and rows[2]["speedup"] == 1.0
    assert (tmp_path / "clip-tiny" / "preprocessor_config.json").is_file()  # the tower is written once


def test_random_7b_without_cuda_fails_clearly(capsys, monkeypatch):
    from bench.eval_speed import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without CUDA, on any machine
    assert main(["--random-model", "llava-7b", "--device", "cuda"]) == 2
    assert "CUDA is not available here" in capsys.readouterr().err


def test_merge_bench_one_layer(tmp_path, capsys):
    """A one-layer run: every contender has a row, ratios are against the best floor run,
    and repeated contenders report every run."""
    from bench.merge_speed import main

    out = tmp_path / "merge.json"
    assert main(["--root", str(tmp_path / "root"), "--layers", "1", "--ranks", "4", "--tasks", "3", "--no-peft",
                 "--no-bin", "--no-naive", "--repeats", "2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    (st,) = res["sets"]
    rows = {r["what"]: r for r in st["rows"]}
    floor = rows["I/O floor (read inputs, write output)"]
    official = rows["robustmerge merge: robustmerge (official)"]
    assert len(floor["all_wall_s"]) == 2 and floor["wall_s"] == min(floor["all_wall_s"])
    assert len(rows["robustmerge merge: robustmerge (official) --no-hash"]["all_wall_s"]) == 2
    assert len(official["all_wall_s"]) == 2 and official["x_floor"] == pytest.approx(official["wall_s"] / floor["wall_s"])
    assert {"robustmerge merge: robustmerge (official) --no-hash", "robustmerge merge: pcb",
            "robustmerge merge: ties", "robustmerge merge: dare", "robustmerge merge: task_arithmetic"} <= set(rows)
    assert all(isinstance(r["rss_mb"], float) for r in st["rows"])  # what it measures: test_peak_rss_is_the_childs_own
    assert "| I/O floor (read inputs, write output) (best of 2) |" in capsys.readouterr().out


def test_peak_rss_is_the_childs_own(tmp_path, monkeypatch):
    """bench.measure reports the child's own peak resident memory (VmHWM): a child that writes
    256 MiB peaks 256 MiB above one that writes nothing, and neither counts this (much larger)
    test process, whose memory a forked child's ru_maxrss would include."""
    from bench.measure import run_module_measured

    (tmp_path / "alloc_probe.py").write_text("import sys\nblock = b'x' * (int(sys.argv[1]) * 2**20)\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    _, idle = run_module_measured("alloc_probe", ["0"])
    _, busy = run_module_measured("alloc_probe", ["256"])
    with open("/proc/self/status") as f:
        parent = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    assert idle < 64 < parent  # a bare interpreter, not this process (torch loaded)
    assert abs((busy - idle) - 256) <= 8  # give or take the interpreter's own pages (observed 0.1 MiB)
