"""LLaVA-1.5-7B at its real sizes on a CPU, end to end, with random weights (nothing downloaded).

    python -m bench.real_size [--root .cache/bench-real-size] [--questions 3] [--new-tokens 4] [--keep]

Steps, each in its own child process so that its wall time and peak resident memory (VmHWM)
are its own:

1. `base`: a random LLaVA-1.5-7B-shaped base (Vicuna-7B sizes, vocab 32000, bf16) streamed to
   sharded safetensors tensor by tensor (the model is never instantiated; a float32 7B would
   not fit in 24 GB), a 32000-piece sentencepiece tokenizer, and a random CLIP ViT-L/14-336
   tower named `openai/clip-vit-large-patch14-336` (found offline next to the base);
2. `adapters`: eight r=16 synthetic LoRA task folders (`robustmerge.synthetic`, LLaVA layout);
3. `merge-official`, `merge-ties`: `python -m robustmerge merge` (robustmerge `official`, TIES);
4. `runner`: `load_pretrained_model(merged, base)` in bf16 and greedy answers through the
   runner's prompt, pixels and generate call, batch size 1, then `run_items` at batch size 2,
   padded and with `same_length_batches` (questions 0 and 1 share a prompt length);
5. `export-hf`: `llava.model.export --layout hf --dtype bf16` of base + official merge;
6. `hf-load`: the export loaded with `LlavaForConditionalGeneration` + `AutoProcessor` in bf16
   and the same questions answered greedily (`bench/hf_client.py`).

Prints a table (wall time, peak RSS per step), the agreement of batch 2 with batch 1 and of the
hf export with the runner, and removes everything it wrote unless `--keep`. `--shape tiny`
runs the same steps at the tiny model's sizes in seconds (the unit test does).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from .measure import machine, run_module_measured

STEPS = ("base", "adapters", "merge-official", "merge-ties", "runner", "export-hf", "hf-load")
N_TASKS, RANK, ALPHA = 8, 16, 32
TOWER_ID = {"7b": "openai/clip-vit-large-patch14-336", "tiny": "clip-tiny"}


def sizes_of(shape: str, layers: int | None = None):
    """The model sizes; `layers` overrides the number of decoder layers (a quick run at real widths)."""
    import dataclasses

    from llava.model.tiny import LLAVA_V15_7B, TinySizes

    sizes = {"7b": LLAVA_V15_7B, "tiny": TinySizes()}[shape]
    return dataclasses.replace(sizes, num_layers=layers) if layers else sizes


def lora_shape(shape: str, layers: int | None = None):
    """The synthetic-adapter shape matching the base (its model config = the run's LlavaConfig)."""
    from robustmerge.synthetic import LlamaShape

    s = sizes_of(shape, layers)
    return LlamaShape(layers=s.num_layers, hidden=s.hidden_size, intermediate=s.intermediate_size,
                      mm_hidden=s.vision_hidden_size, heads=s.num_heads, vocab=s.vocab_size,
                      max_positions=s.max_positions, tower=TOWER_ID[shape])


def paths(root: Path, shape: str) -> dict[str, Path]:
    return {"base": root / "llava-v1.5-7b", "tower": root / TOWER_ID[shape].split("/")[-1], "tasks": root / "tasks",
            "official": root / "merged-official", "ties": root / "merged-ties", "export": root / "export-hf",
            "answers": root / "answers", "results": root / "results", "questions": root / "questions.json"}


def _random_tensor(name: str, shape: tuple[int, ...], seed: int, lm_head_scale: float = 4.0):
    """Init-like values: norms 1, biases 0, matrices N(0, 0.02²) (lm_head scaled, as in llava.model.tiny)."""
    import torch

    if len(shape) == 1:
        return torch.ones(shape) if "norm" in name else torch.zeros(shape)
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.02  # float32 [d_out, d_in]
    return weight * lm_head_scale if name == "lm_head.weight" else weight


def write_random_base(folder: Path, sizes, tower_name: str, seed: int = 0, dtype: str = "bfloat16") -> None:
    """A random LLaVA-1.5 base in the original layout, streamed one tensor at a time."""
    import torch
    from transformers import GenerationConfig

    from llava.model.export import _expected_shapes
    from llava.model.tensor_files import PlannedTensor, write_sharded_safetensors
    from llava.model.tiny import tiny_llava_config, write_tokenizer
    from robustmerge.atomic import atomic_folder
    from robustmerge.taskfolder import MODEL_CONFIG

    config = tiny_llava_config(sizes, tower_name)
    torch_dtype = getattr(torch, dtype)
    plan = [PlannedTensor(k, shape, torch_dtype,
                          (lambda k=k, shape=shape, i=i: _random_tensor(k, shape, seed * 100_003 + i).to(torch_dtype)))
            for i, (k, shape) in enumerate(_expected_shapes(config).items())]
    with atomic_folder(folder) as tmp:
        write_sharded_safetensors(plan, tmp, 5 * 10**9)
        original = config.to_original_dict()
        original["torch_dtype"] = dtype
        original.pop("dtype", None)
        (tmp / MODEL_CONFIG).write_text(json.dumps(original, indent=2, sort_keys=True) + "\n")
        GenerationConfig.from_model_config(config).save_pretrained(str(tmp))
        write_tokenizer(tmp, sizes.vocab_size, seed)


def make_questions(root: Path, n: int) -> list[dict]:
    from .hf_compat import QUESTIONS, make_images

    images = make_images(root / "images", n)
    # questions 0 and 1 share a text (same prompt length, different images); 2 is longer, so
    # batch size 2 pads one batch, and same-length batching puts 0 and 1 in an unpadded batch
    texts = [QUESTIONS[0], QUESTIONS[0]] + [QUESTIONS[2 + i % 2] for i in range(max(0, n - 2))]
    questions = [{"image": str(p), "question": t} for p, t in zip(images, texts)]
    (root / "questions.json").write_text(json.dumps(questions))
    return questions


# ----------------------------------------------------------------------------- steps (children)


def step_base(p: dict, args) -> dict:
    from llava.model.tiny import write_clip_tower
    from robustmerge.atomic import atomic_folder

    sizes = sizes_of(args.shape, args.layers)
    with atomic_folder(p["tower"]) as tmp:
        write_clip_tower(tmp, sizes, seed=0)
    write_random_base(p["base"], sizes, TOWER_ID[args.shape], seed=1)
    size = sum(f.stat().st_size for f in p["base"].glob("*.safetensors"))
    return {"base_gb": size / 1e9, "tower_gb": sum(f.stat().st_size for f in p["tower"].iterdir()) / 1e9}


def step_adapters(p: dict, args) -> dict:
    from robustmerge.synthetic import write_task_adapters

    folders = write_task_adapters(p["tasks"], N_TASKS, lora_shape(args.shape, args.layers), r=RANK, alpha=ALPHA, seed=0)
    return {"tasks": len(folders), "gb": sum(f.stat().st_size for d in folders for f in d.iterdir()) / 1e9}


def step_runner(p: dict, args) -> dict:
    """Runner answers at batch size 1 (ids) and 2 (texts) on base + official merge, bf16."""
    from llava.eval.runner import EvalItem, GenerationSettings, load_bundle, run_items
    from llava.eval.tasks.prompts import prompt_as_is

    from .hf_compat import project_answers

    questions = json.loads(p["questions"].read_text())
    t0 = time.perf_counter()
    bundle = load_bundle(p["official"], p["base"], device="cpu", dtype="bf16", model_id="merged-official")
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    batch1 = project_answers(bundle, questions, args.new_tokens, runner_text=False, logits=True)
    b1_s = time.perf_counter() - t0
    items = [EvalItem(question_id=i, prompt=prompt_as_is({"text": q["question"]}), preprocessing="pad",
                      image_path=Path(q["image"])) for i, q in enumerate(questions)]
    result = {"load_s": load_s, "bs1_s": b1_s, "bs1": batch1}
    for name, same_length in (("bs2", False), ("bs2_same_length", True)):
        t0 = time.perf_counter()
        out = p["answers"] / f"{name}.jsonl"
        settings = GenerationSettings(max_new_tokens=args.new_tokens, batch_size=2, same_length_batches=same_length)
        run_items(bundle, items, out, settings, resume=False, progress=False)
        texts = [json.loads(line)["text"] for line in out.read_text().splitlines()]
        result.update({f"{name}_s": time.perf_counter() - t0, f"{name}_texts": texts,
                       f"{name}_identical": sum(a["text"] == b for a, b in zip(batch1, texts))})
    return result


def step_export(p: dict, args) -> dict:
    from llava.model.export import export_model

    export_model(p["official"], p["export"], "hf", model_base=p["base"], dtype="bf16")
    return {"gb": sum(f.stat().st_size for f in p["export"].iterdir()) / 1e9,
            "shards": len(list(p["export"].glob("model-*.safetensors"))) or 1}


def step_hf(p: dict, args) -> dict:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from hf_client import answer

    return answer(str(p["export"]), json.loads(p["questions"].read_text()), args.new_tokens, dtype=torch.bfloat16,
                  logits=True)


def run_step(name: str, p: dict, args) -> None:
    """Child process entry: run one step and write its result JSON."""
    if name.startswith("merge-"):
        raise ValueError("merge steps run `python -m robustmerge merge` directly")
    result = {"base": step_base, "adapters": step_adapters, "runner": step_runner, "export-hf": step_export,
              "hf-load": step_hf}[name](p, args)
    p["results"].mkdir(parents=True, exist_ok=True)
    (p["results"] / f"{name}.json").write_text(json.dumps(result, indent=1))


# ----------------------------------------------------------------------------- parent


def _child_args(name: str, p: dict, args) -> tuple[str, list[str]]:
    tasks = sorted(str(d) for d in p["tasks"].iterdir() if d.is_dir()) if p["tasks"].is_dir() else []
    if name == "merge-official":
        return "robustmerge", ["merge", "--method", "robustmerge", "--preset", "official", "--adapters", *tasks,
                               "--out", str(p["official"]), "-q"]
    if name == "merge-ties":
        return "robustmerge", ["merge", "--method", "ties", "--adapters", *tasks, "--out", str(p["ties"]), "-q"]
    return "bench.real_size", ["--step", name, "--root", str(args.root), "--shape", args.shape,
                               "--new-tokens", str(args.new_tokens)] + (["--layers", str(args.layers)] if args.layers else [])


def agreement(results: dict) -> dict:
    runner, hf = results.get("runner", {}), results.get("hf-load", {})
    out = {"questions": len(runner.get("bs1", []))}
    if runner:
        out["bs2_identical_to_bs1"] = runner["bs2_identical"]
        if "bs2_same_length_identical" in runner:
            out["bs2_same_length_identical_to_bs1"] = runner["bs2_same_length_identical"]
    if runner and hf:
        out["hf_tokens_identical_to_runner"] = sum(a["new_token_ids"] == b["new_token_ids"]
                                                   for a, b in zip(runner["bs1"], hf["answers"]))
        out["hf_loading_clean"] = not any(hf["loading"].values())
        diffs, margins = [], []
        for a, b in zip(runner["bs1"], hf["answers"]):
            ours = a["first_logits"]
            diffs.append(max(abs(x - y) for x, y in zip(ours, b["first_logits"][:len(ours)])))
            top = sorted(ours, reverse=True)[:2]
            margins.append(top[0] - top[1])
        out["first_step_logits_max_abs_diff"] = round(max(diffs), 4)
        out["runner_top1_margin_min"] = round(min(margins), 4)
    for a in runner.get("bs1", []):
        a.pop("first_logits", None)
    for a in hf.get("answers", []):
        a.pop("first_logits", None)
    return out


def run_all(args) -> dict:
    p = paths(args.root, args.shape)
    if args.root.exists():
        shutil.rmtree(args.root)
    args.root.mkdir(parents=True)
    make_questions(args.root, args.questions)
    rows, results = [], {}
    for name in STEPS:
        module, child = _child_args(name, p, args)
        wall, peak_mib = run_module_measured(module, child)
        rows.append({"step": name, "wall_s": round(wall, 1), "peak_rss_gb": round(peak_mib / 1024, 2)})
        print(f"{name:>15}: {wall:7.1f} s  peak RSS {peak_mib / 1024:6.2f} GB", flush=True)
        file = p["results"] / f"{name}.json"
        if file.is_file():
            results[name] = json.loads(file.read_text())
    return {"machine": machine(), "shape": args.shape, "layers": args.layers, "steps": rows, "agreement": agreement(results),
            "details": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.real_size", description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path(".cache/bench-real-size"), help="scratch folder (removed)")
    parser.add_argument("--shape", choices=("7b", "tiny"), default="7b")
    parser.add_argument("--layers", type=int, default=None,
                        help="decoder layers instead of the shape's (e.g. 2: a quick check at 7B widths)")
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)  # child processes
    args = parser.parse_args(argv)
    if args.step:
        run_step(args.step, paths(args.root, args.shape), args)
        return 0
    t0 = time.perf_counter()
    try:
        report = run_all(args)
    finally:
        if not args.keep:
            shutil.rmtree(args.root, ignore_errors=True)
    report["total_s"] = round(time.perf_counter() - t0, 1)
    print(f"machine: {report['machine']}; total {report['total_s']} s")
    print("agreement:", json.dumps(report["agreement"]))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
