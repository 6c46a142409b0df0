"""Evaluation throughput: batched vs one-at-a-time generation, and adapter swapping vs reloading.

    python -m bench.eval_speed [--root .cache/bench-eval] [--questions 64] [--adapters 4]

On a tiny LLaVA made by `llava.model.tiny` (sizes below) and a generated VQA-style task:

1. answers per second at batch size 1, 8 and 16 (greedy), in float32 and bfloat16, with the
   share of answers identical to batch size 1 of the same dtype, the task score and its
   difference from batch size 1, and the speed-up; also with `same_length_batches` (only
   prompts of one token length share a batch: no padding). float32 batches must agree with
   batch size 1 (exit status 1 otherwise); bfloat16 rows are measured, not required to;
2. evaluating K adapter folders: loading the base anew for each (`load_pretrained_model`
   with `--model-base`) versus loading it once and swapping adapters
   (`llava.model.adapter_swap.AdapterSwapper`), with the check that both give the same
   answers, and the ratio.

All timings are wall times in this process, taken one after another, with one torch thread
by default (`--threads`). No GPU is used.

    python -m bench.eval_speed --random-model llava-7b --device cuda [--dtype bfloat16] [--attn sdpa,flash_attention_2]

instead measures greedy generation tokens/s of a randomly initialised LLaVA-1.5-7B (real
sizes: Vicuna-7B + CLIP ViT-L/14-336, no weights needed) at batch size 1 vs 8 vs 16, per
attention implementation (flash_attention_2 when flash-attn is installed), with peak GPU
memory. `--random-model tiny --device cpu --dtype float32` runs the same code on a CPU.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

from .measure import machine


def setup(root: Path, questions: int, adapters: int, sizes) -> tuple[Path, Path, list[Path]]:
    from llava.eval import tasks as task_defs
    from llava.eval.synthetic_data import make_task
    from llava.model.tiny import make_tiny_llava, make_tiny_lora

    if root.exists():
        shutil.rmtree(root)
    tiny = make_tiny_llava(root / "model", sizes, seed=0)
    data = root / "data"
    make_task(data, task_defs.get_task("VQAv2"), questions, random.Random(0))
    loras = [make_tiny_lora(tiny.base, root / f"lora{k}", seed=k + 1) for k in range(adapters)]
    return tiny.base, data, loras


def items_of(data: Path):
    from llava.eval import tasks as task_defs
    from llava.eval.runner import items_from_questions, read_question_file

    task = task_defs.get_task("VQAv2")
    questions = read_question_file(data / task.question_file)
    return items_from_questions(questions, task, data / "datasets", "official")


def timed_run(bundle, items, out: Path, batch_size: int, max_new_tokens: int,
              same_length: bool = False) -> tuple[float, str]:
    from llava.eval.runner import GenerationSettings, run_items

    t0 = time.perf_counter()
    run_items(bundle, items, out, GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size,
                                                     same_length_batches=same_length),
              resume=False, progress=False)
    wall = time.perf_counter() - t0
    texts = [json.loads(line)["text"] for line in out.read_text().splitlines()]
    return wall, json.dumps(texts)


def task_score(data: Path, answers: Path) -> float:
    """The generated VQAv2 task's headline score (official protocol, in %) of one answers file."""
    from llava.eval.pipeline import score_task

    result = score_task("VQAv2", data, answers.parent / f"{answers.stem}-score", answers_file=answers)
    return 100 * float(result["metrics"][result["headline"]])


BATCH_MODES = (("1", 1, False), ("8", 8, False), ("8 same-length", 8, True), ("16", 16, False),
               ("16 same-length", 16, True))


def bench_batching(base: Path, items, out: Path, max_new_tokens: int, data: Path | None = None,
                   dtypes: tuple[str, ...] = ("float32", "bfloat16"), modes=BATCH_MODES) -> list[dict]:
    """Per dtype and batch mode: speed, share of answers identical to batch size 1 (same dtype)
    and, with ``data``, the task score and its difference from batch size 1."""
    from llava.eval.runner import load_bundle

    rows = []
    for dtype in dtypes:
        bundle = load_bundle(base, device="cpu", dtype=dtype, model_id="tiny")
        reference = None
        for label, bs, same_length in modes:
            file = out / f"{dtype}-bs{label.replace(' ', '-')}.jsonl"
            wall, texts = timed_run(bundle, items, file, bs, max_new_tokens, same_length)
            answers = json.loads(texts)
            reference = reference or (answers, wall)
            same = sum(a == b for a, b in zip(answers, reference[0]))
            row = {"dtype": dtype, "batch": label, "batch_size": bs, "same_length": same_length, "wall_s": wall,
                   "answers_per_s": len(items) / wall, "speedup": reference[1] / wall,
                   "identical_share": same / len(items), "identical_to_bs1": same == len(items)}
            if data is not None:
                row["score"] = task_score(data, file)
            rows.append(row)
        if data is not None:
            first = next(r for r in rows if r["dtype"] == dtype)
            for r in rows:
                if r["dtype"] == dtype:
                    r["score_diff"] = r["score"] - first["score"]
        del bundle
    return rows


def print_batching(rows: list[dict]) -> None:
    print("\n| dtype | batch size | wall s | answers/s | speed-up vs 1 | answers identical to batch 1 | score | score − batch 1 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        score = f"{r['score']:.2f} | {r['score_diff']:+.2f}" if "score" in r else "– | –"
        print(f"| {r['dtype']} | {r['batch']} | {r['wall_s']:.2f} | {r['answers_per_s']:.1f} | {r['speedup']:.2f}× | "
              f"{100 * r['identical_share']:.0f}% | {score} |")


def bench_swapping(base: Path, loras: list[Path], items, out: Path, max_new_tokens: int, batch_size: int) -> dict:
    from llava.eval.runner import ModelBundle, load_bundle
    from llava.model.adapter_swap import AdapterSwapper

    reload_prep = reload_total = 0.0
    reload_texts = []
    for k, lora in enumerate(loras):
        t0 = time.perf_counter()
        bundle = load_bundle(lora, base, device="cpu", dtype="float32", model_id=f"a{k}")
        reload_prep += time.perf_counter() - t0
        wall, texts = timed_run(bundle, items, out / f"reload{k}.jsonl", batch_size, max_new_tokens)
        reload_total += time.perf_counter() - t0
        reload_texts.append(texts)

    t0 = time.perf_counter()
    swapper = AdapterSwapper(base, device="cpu", dtype="float32")
    swap_prep = time.perf_counter() - t0
    swap_total = swap_prep
    swap_texts = []
    for k, lora in enumerate(loras):
        t0 = time.perf_counter()
        swapper.attach(lora)
        swap_prep += time.perf_counter() - t0
        bundle = ModelBundle(swapper.tokenizer, swapper.model, swapper.image_processor, f"a{k}")
        wall, texts = timed_run(bundle, items, out / f"swap{k}.jsonl", batch_size, max_new_tokens)
        swapper.detach()
        swap_total += time.perf_counter() - t0
        swap_texts.append(texts)
    return {"adapters": len(loras), "reload_prep_s": reload_prep, "swap_prep_s": swap_prep,
            "reload_total_s": reload_total, "swap_total_s": swap_total, "prep_ratio": reload_prep / swap_prep,
            "total_ratio": reload_total / swap_total, "identical": reload_texts == swap_texts}


def bench_random_model(root: Path, shape: str, device: str, dtype: str, attns: list[str], batches: list[int],
                       new_tokens: int, prompt_tokens: int = 40) -> list[dict]:
    """Greedy generation throughput of a randomly initialised LLaVA (``shape``: llava-7b at
    its real sizes, or tiny for a smoke run): one image and ``prompt_tokens`` text tokens per
    question, exactly ``new_tokens`` new tokens per answer; tokens/s at each batch size, per
    attention implementation, after one warm-up generation. Also notes whether row 0's tokens
    equal those of batch size 1 (the same prompt and image)."""
    import torch

    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.model.tiny import LLAVA_V15_7B, TinySizes, random_llava

    sizes = LLAVA_V15_7B if shape == "llava-7b" else TinySizes()
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    torch_dtype = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(0)
    text = torch.randint(3, sizes.vocab_size, (prompt_tokens,), generator=gen)
    ids = torch.cat([torch.tensor([1]), text[:5], torch.tensor([IMAGE_TOKEN_INDEX]), text[5:]]).unsqueeze(0)
    images = torch.randn(max(batches), 3, sizes.image_size, sizes.image_size, generator=gen)
    rows = []
    def generate(model, bs: int) -> torch.Tensor:
        with torch.inference_mode():
            return model.generate(inputs=ids.expand(bs, -1).to(dev), images=images[:bs].to(dev, torch_dtype),
                                  max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                  pad_token_id=0)

    for attn in attns:
        model = random_llava(sizes, root / f"clip-{shape}", dev, torch_dtype, attn)
        reference = None
        for bs in batches:
            generate(model, bs)  # warm-up: kernels, allocator, caches
            if cuda:
                torch.cuda.synchronize(dev)
                torch.cuda.reset_peak_memory_stats(dev)
            t0 = time.perf_counter()
            out = generate(model, bs)
            if cuda:
                torch.cuda.synchronize(dev)
            wall = time.perf_counter() - t0
            if tuple(out.shape) != (bs, new_tokens):
                raise RuntimeError(f"expected {bs} × {new_tokens} new tokens, got {tuple(out.shape)}")
            reference = out[0] if reference is None else reference
            rows.append({"attn": attn, "batch_size": bs, "new_tokens": new_tokens, "wall_s": wall,
                         "tokens_per_s": bs * new_tokens / wall, "row0_equals_bs1": bool(torch.equal(out[0], reference)),
                         "peak_gpu_gb": torch.cuda.max_memory_allocated(dev) / 1e9 if cuda else None})
        del model
        if cuda:
            torch.cuda.empty_cache()
    for r in rows:
        first = next(x for x in rows if x["attn"] == r["attn"])
        r["speedup"] = r["tokens_per_s"] / first["tokens_per_s"]
    return rows


def print_random_model(rows: list[dict], shape: str, device: str, dtype: str) -> None:
    print(f"\nrandomly initialised {shape} ({device}, {dtype}), greedy, {rows[0]['new_tokens']} new tokens per answer:")
    print("| attention | batch size | wall s | tokens/s | speed-up vs batch 1 | peak GPU GB | row 0 = batch 1 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        gb = f"{r['peak_gpu_gb']:.1f}" if r["peak_gpu_gb"] is not None else "–"
        print(f"| {r['attn']} | {r['batch_size']} | {r['wall_s']:.2f} | {r['tokens_per_s']:.1f} | {r['speedup']:.2f}× | "
              f"{gb} | {'yes' if r['row0_equals_bs1'] else 'no'} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path(".cache/bench-eval"))
    ap.add_argument("--questions", type=int, default=64)
    ap.add_argument("--adapters", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=256, help="tiny model hidden size (layers: 4)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: stable figures on a shared 2-core machine)")
    ap.add_argument("--random-model", choices=("llava-7b", "tiny"),
                    help="instead: generation throughput of a randomly initialised model of this shape "
                         "(llava-7b = LLaVA-1.5-7B's real sizes; needs a GPU: --device cuda)")
    ap.add_argument("--device", default="cuda", help="for --random-model")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"), help="for --random-model")
    ap.add_argument("--attn", help="for --random-model: comma-separated attention implementations "
                                   "(default: sdpa, plus flash_attention_2 when flash-attn is installed)")
    ap.add_argument("--batches", default="1,8,16", help="for --random-model")
    ap.add_argument("--new-tokens", type=int, default=64, help="for --random-model")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    if a.random_model:
        return main_random_model(a)
    from llava.model.tiny import TinySizes

    sizes = TinySizes(hidden_size=a.hidden, intermediate_size=2 * a.hidden, num_layers=4, num_heads=4, num_kv_heads=4)
    print(f"machine: {machine()}")
    print(f"model: tiny LLaVA, hidden {a.hidden}, 4 layers, CLIP {sizes.image_size} px; fp32 CPU; "
          f"{a.questions} questions, greedy, max {a.max_new_tokens} new tokens")
    base, data, loras = setup(a.root, a.questions, a.adapters, sizes)
    items = items_of(data)
    out = a.root / "answers"
    batching = bench_batching(base, items, out, a.max_new_tokens, data)
    print_batching(batching)
    swap = bench_swapping(base, loras, items[: max(8, a.questions // 4)], out, a.max_new_tokens, 8)
    n_swap = max(8, a.questions // 4)
    print(f"\n{swap['adapters']} adapters, {n_swap} questions each, batch 8:")
    print("| strategy | model preparation s | total s |")
    print("|---|---|---|")
    print(f"| reload base + adapter for each | {swap['reload_prep_s']:.2f} | {swap['reload_total_s']:.2f} |")
    print(f"| load base once, swap adapters | {swap['swap_prep_s']:.2f} | {swap['swap_total_s']:.2f} |")
    print(f"ratio reload / swap: preparation {swap['prep_ratio']:.2f}×, total {swap['total_ratio']:.2f}×; "
          f"answers identical: {'yes' if swap['identical'] else 'NO'}")
    if a.json:
        a.json.write_text(json.dumps({"machine": machine(), "torch_threads": torch.get_num_threads(),
                                      "batching": batching, "swapping": swap}, indent=2))
    fp32_same = all(r["identical_to_bs1"] for r in batching if r["dtype"] == "float32")
    return 0 if fp32_same and swap["identical"] else 1  # bf16 rows are measured, not required to agree


def main_random_model(a) -> int:
    import importlib.util

    import torch

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"--random-model {a.random_model} --device {a.device}: CUDA is not available here; "
              "run it on a GPU machine, or smoke-test with --random-model tiny --device cpu --dtype float32",
              file=sys.stderr)
        return 2
    attns = a.attn.split(",") if a.attn else \
        ["sdpa"] + (["flash_attention_2"] if importlib.util.find_spec("flash_attn") and a.device.startswith("cuda") else [])
    device_name = torch.cuda.get_device_name(torch.device(a.device)) if a.device.startswith("cuda") else machine()
    print(f"device: {device_name}")
    rows = bench_random_model(a.root, a.random_model, a.device, a.dtype, attns,
                              [int(b) for b in a.batches.split(",")], a.new_tokens)
    print_random_model(rows, a.random_model, a.device, a.dtype)
    if a.json:
        a.json.write_text(json.dumps({"device": device_name, "shape": a.random_model, "dtype": a.dtype,
                                      "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
