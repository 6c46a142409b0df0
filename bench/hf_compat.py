"""Does an hf-layout export give the project runner's greedy tokens in other transformers versions?

    python -m bench.hf_compat --venv /tmp/tf457 --transformers '4.57.*' [--venv /tmp/tf517 --transformers '5.17.*']

For each (venv, version) pair: creates the throw-away venv when it does not exist (`python3 -m
venv`, then `pip install torch==2.13.0 transformers==VERSION safetensors pillow sentencepiece
protobuf`; torch is pinned, torchvision is not installed), builds a tiny LLaVA + one LoRA
(`llava.model.tiny`) and a few images, exports base + LoRA in the hf layout with this project,
answers the questions with the project's runner (batch size 1, float32, greedy) and, in the
venv, with `bench/hf_client.py` (`LlavaForConditionalGeneration` + `AutoProcessor`), and
compares the new token ids question by question. Also runs the client in this environment,
and with `--lmms-eval-python` lmms-eval's `llava_hf` model (`bench/lmms_eval_client.py`,
answer texts compared).
Exit status 1 when any version disagrees or reports missing/unexpected keys.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PIP_PACKAGES = ["torch==2.13.0", "safetensors", "pillow", "sentencepiece", "protobuf"]
QUESTIONS = ["What color is the shape?", "What shape is this?", "Describe the image briefly.",
             "Is there a circle in the picture?"]


def make_venv(venv: Path, transformers_spec: str, extra: tuple[str, ...] = ()) -> Path:
    """The venv's python, creating the venv (pinned torch, no torchvision) if it is missing;
    `extra` packages are installed (again) every time."""
    python = venv / "bin" / "python"
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PIP_PACKAGES, f"transformers=={transformers_spec}"],
                       check=True)
    if extra:
        subprocess.run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0", *extra], check=True)
    return python


def make_images(folder: Path, n: int) -> list[Path]:
    """Small solid-colour pictures with a shape, one per question."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    colors = [(200, 30, 30), (30, 160, 40), (40, 60, 210), (220, 200, 30)]
    paths = []
    for i in range(n):
        image = Image.new("RGB", (80 + 16 * i, 64), (240, 240, 240))  # not square: exercises pad-to-square
        ImageDraw.Draw(image).ellipse((10, 8, 50 + 8 * i, 56), fill=colors[i % len(colors)])
        paths.append(folder / f"img{i}.png")
        image.save(paths[-1])
    return paths


def project_answers(bundle, questions: list[dict], max_new_tokens: int, runner_text: bool = True,
                    logits: bool = False) -> list[dict]:
    """Greedy new-token ids of this project's runner path, batch size 1: the runner's prompt
    (`encode_prompt`), pixels (`pixel_values`, pad) and `generate` call, made here to keep the
    ids. With `runner_text`, also the text `generate_batch` itself returns (a second generation);
    else the ids decoded the way it decodes them. With `logits`, also the first step's logits."""
    import torch
    from PIL import Image

    from llava.eval.runner import (
        EvalItem,
        GenerationSettings,
        encode_prompt,
        generate_batch,
        pixel_values,
    )
    from llava.eval.tasks.prompts import prompt_as_is

    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    model, tokenizer = bundle.model, bundle.tokenizer
    out = []
    for q in questions:
        item = EvalItem(question_id=q["question"], prompt=prompt_as_is({"text": q["question"]}), preprocessing="pad",
                        image_path=Path(q["image"]))
        ids = encode_prompt(item.prompt, tokenizer, settings.conv_mode)
        image = Image.open(q["image"]).convert("RGB")
        pixels = pixel_values(image, bundle.image_processor, "pad", model.config)[None]  # [1, 3, H, W]
        with torch.inference_mode():
            gen = model.generate(torch.tensor([ids]), images=pixels.to(model.dtype), image_sizes=[image.size],
                                 do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, use_cache=True,
                                 pad_token_id=tokenizer.pad_token_id, return_dict_in_generate=True,
                                 output_scores=logits)  # as generate_batch calls it
        new = gen.sequences[0].tolist()
        text = (generate_batch(bundle, [item], [ids], settings)[0] if runner_text
                else tokenizer.decode(new, skip_special_tokens=True).strip())
        out.append({"new_token_ids": new, "text": text})
        if logits:
            out[-1]["first_logits"] = gen.scores[0][0].float().tolist()  # [V]
    return out


def compare(ours: list[dict], theirs: dict) -> dict:
    """Agreement of one client run with the runner's answers."""
    same = [a["new_token_ids"] == b["new_token_ids"] for a, b in zip(ours, theirs["answers"])]
    texts = [a["text"] == b["text"] for a, b in zip(ours, theirs["answers"])]
    clean = not any(theirs["loading"].values())
    return {"transformers": theirs["transformers"], "tokens_identical": sum(same), "texts_identical": sum(texts),
            "questions": len(ours), "loading_clean": clean, "ok": all(same) and clean and len(same) == len(ours)}


def run_client(python: str, export: Path, questions_file: Path, out: Path, max_new_tokens: int) -> dict:
    proc = subprocess.run([python, str(HERE / "hf_client.py"), str(export), str(questions_file), str(out),
                           "--max-new-tokens", str(max_new_tokens)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{python} hf_client.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def run_lmms_eval(python: str, export: Path, questions_file: Path, out: Path, max_new_tokens: int) -> dict:
    proc = subprocess.run([python, str(HERE / "lmms_eval_client.py"), str(export), str(questions_file), str(out),
                           "--max-new-tokens", str(max_new_tokens)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{python} lmms_eval_client.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def check(work: Path, clients: list[str], max_new_tokens: int = 16, lmms_eval: str | None = None) -> list[dict]:
    """Export a tiny model and compare every client's greedy tokens with the runner's."""
    from llava.eval.runner import load_bundle
    from llava.model.export import export_model
    from llava.model.tiny import make_tiny_llava, make_tiny_lora

    tiny = make_tiny_llava(work / "model", seed=0)
    lora = make_tiny_lora(tiny.base, work / "lora", seed=3, scale=0.3)
    export = export_model(lora, work / "export-hf", "hf", model_base=tiny.base, dtype="fp32")
    images = make_images(work / "images", len(QUESTIONS))
    questions = [{"image": str(p), "question": q} for p, q in zip(images, QUESTIONS)]
    questions_file = work / "questions.json"
    questions_file.write_text(json.dumps(questions))
    bundle = load_bundle(lora, tiny.base, device="cpu", dtype="fp32", model_id="tiny")
    ours = project_answers(bundle, questions, max_new_tokens)
    rows = []
    for k, python in enumerate(clients):
        t0 = time.perf_counter()
        theirs = run_client(python, export, questions_file, work / f"client{k}.json", max_new_tokens)
        rows.append({**compare(ours, theirs), "python": python, "wall_s": round(time.perf_counter() - t0, 1)})
    if lmms_eval:
        t0 = time.perf_counter()
        got = run_lmms_eval(lmms_eval, export, questions_file, work / "lmms.json", max_new_tokens)
        same = sum(a["text"] == b for a, b in zip(ours, got["answers"]))
        rows.append({"transformers": f"lmms-eval {got['lmms_eval']} llava_hf", "tokens_identical": None,
                     "texts_identical": same, "questions": len(ours), "loading_clean": None,
                     "ok": same == len(ours), "python": lmms_eval, "wall_s": round(time.perf_counter() - t0, 1)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hf_compat", description=__doc__.split("\n")[0])
    parser.add_argument("--venv", action="append", default=[], type=Path, help="throw-away venv (created if missing)")
    parser.add_argument("--transformers", action="append", default=[], help="transformers version spec per --venv")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--lmms-eval-python", default=None,
                        help="python of a venv with lmms-eval installed: also compare its llava_hf answers (texts)")
    args = parser.parse_args(argv)
    if len(args.venv) != len(args.transformers):
        parser.error("give one --transformers per --venv")
    clients = [sys.executable] + [str(make_venv(v, t)) for v, t in zip(args.venv, args.transformers)]
    with tempfile.TemporaryDirectory(prefix="hf-compat-") as tmp:
        rows = check(Path(tmp), clients, args.max_new_tokens, args.lmms_eval_python)
    for r in rows:
        tokens = f"tokens identical {r['tokens_identical']}/{r['questions']}, " if r["tokens_identical"] is not None else ""
        print(f"transformers {r['transformers']:>8}: {tokens}texts {r['texts_identical']}/{r['questions']}, "
              f"loading clean {r['loading_clean']} ({r['wall_s']} s)")
    print(json.dumps(rows))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
