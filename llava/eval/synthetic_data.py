"""A tiny benchmark data folder in the real layouts, for tests and demos (deterministic by seed).

``make_benchmark_data(root)`` writes, with PIL-drawn shapes as images::

    root/instructions/<Task>/{test,val,...}.json   the twelve MM-MergeBench question files
                                                   (+ *_coco_type.json caption ground truth)
    root/datasets/<Task>/*.png                     their images
    root/datasets/ScienceQA/{problems,pid_splits}.json
    root/eval/pope/llava_pope_test.jsonl           POPE questions, coco/coco_pope_<split>.json labels,
    root/eval/pope/val2014/*.jpg                   and images
    root/eval/MME/llava_mme.jsonl                  MME questions; the ground truth and images in
    root/eval/MME/MME_Benchmark_release_version/   both release layouts (flat and nested)
    root/eval/mmbench/mmbench_dev_20230712.tsv     MMBench rows with base64 images and rotated copies

``n`` questions per MM-MergeBench task (ScienceQA's last one is text-only). CLI:
``python -m llava.eval.synthetic_data --out DIR [--n 3] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from llava.eval import tasks as task_defs
from llava.eval.tasks.mme.scorer import CATEGORIES as MME_CATEGORIES
from llava.eval.tasks.pope.scorer import SPLITS as POPE_SPLITS
from robustmerge.errors import UserError, cli_main

COLORS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40),
          "purple": (140, 50, 170), "orange": (240, 140, 20)}
SHAPES = ("circle", "square", "triangle")
PHRASE = "Answer the question using a single word or phrase."
LETTER = "Answer with the option's letter from the given choices directly."
CAPTION = "What is happening in the image? Generate a brief caption for the image."
MMBENCH_TSV = "mmbench_dev_20230712.tsv"
MME_NESTED = {"artwork", "celebrity", "landmark", "posters", "scene"}


def draw(rng: random.Random, color: str, shape: str, size: tuple[int, int] | None = None) -> Image.Image:
    """One coloured shape on a grey background, random size (30-90 px a side) unless given."""
    w, h = size or (rng.randint(30, 90), rng.randint(30, 90))
    img = Image.new("RGB", (w, h), (rng.randint(150, 230),) * 3)
    d = ImageDraw.Draw(img)
    box = (w // 5, h // 5, w - w // 5, h - h // 5)
    if shape == "circle":
        d.ellipse(box, fill=COLORS[color])
    elif shape == "square":
        d.rectangle(box, fill=COLORS[color])
    else:
        d.polygon([(w // 2, box[1]), (box[2], box[3]), (box[0], box[3])], fill=COLORS[color])
    return img


def _save(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def _dump(obj, path: Path, jsonl: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in obj) if jsonl else json.dumps(obj, indent=1)
    path.write_text(text, encoding="utf-8")


def _pick(rng: random.Random) -> tuple[str, str]:
    return rng.choice(sorted(COLORS)), rng.choice(SHAPES)


# ----------------------------------------------------------------------------- MM-MergeBench


def _question(task: str, i: int, color: str, shape: str, rng: random.Random) -> dict:
    """Question text and ground-truth fields of one question of ``task`` (Table 8 templates)."""
    if task in ("ScienceQA", "AOKVQA"):
        options = [color, rng.choice([c for c in COLORS if c != color])]
        rng.shuffle(options)
        text = (f"What color is the {shape}?\n" + "".join(f"{'AB'[k]}. {o}\n" for k, o in enumerate(options))
                + LETTER)
        return {"text": ("<image>\n" if task == "ScienceQA" else "") + text,
                "answer": "AB"[options.index(color)], "choices": options}
    if task == "ImageNet":
        return {"text": f"What is the object in the image?\n{PHRASE}", "answer": ["Golden retriever", "Castle",
                                                                                   "Chime"][i % 3]}
    if task == "ImageNet-R":
        return {"text": "What is the object in the image?", "answer": shape}
    if task == "Grounding":
        return {"text": "Please provide the bounding box coordinate of the region this sentence describes: "
                        f"{color} {shape}.", "answer_bbox": "[0.2, 0.2, 0.8, 0.8]"}
    if task in ("VizWiz-caption", "Flickr30k"):
        return {"text": CAPTION, "answer": f"A {color} {shape} on a grey background."}
    if task == "Screen2Words":
        return {"text": "You are given a phone UI screen. Describe the screen in one sentence.",
                "answer": f"A screen showing a {color} {shape}."}
    if task == "OCRVQA":
        return {"text": f"What is the title of this book?\n{PHRASE}", "answer": f"The {color} {shape}"}
    if task in ("IconQA", "TabMWP"):
        return {"text": f"How many {shape}s are there?\n{PHRASE}", "answer": "1"}
    return {"text": f"What color is the {shape}?\n{PHRASE}", "answer": color}  # VQAv2


def _coco_gt(questions: list[dict], captions: list[str]) -> dict:
    """Caption ground truth: image ids 1..N in question order, two references each."""
    images = [{"id": k, "file_name": q["image"]} for k, q in enumerate(questions, start=1)]
    anns = []
    for k, cap in enumerate(captions, start=1):
        for ref in (cap, cap.replace("A ", "One ", 1)):
            anns.append({"image_id": k, "caption": ref, "id": len(anns) + 1})
    return {"images": images, "annotations": anns}


def make_task(root: Path, task: task_defs.TaskSpec, n: int, rng: random.Random) -> Path:
    """Question file (+ images, caption GT, ScienceQA problems) of one MM-MergeBench task."""
    folder = task.instructions_folder
    questions, captions, problems = [], [], {}
    for i in range(n):
        color, shape = _pick(rng)
        q = _question(task.name, i, color, shape, rng)
        image = f"{folder}/{task.name.lower()}_{i}.png"
        img = draw(rng, color, shape)
        qid = str(1000 + i) if task.name == "ScienceQA" else (i if i % 2 else f"{task.name.lower()}-{i}")
        record = {"question_id": qid, "image": image, "text": q["text"]}
        if task.name == "ScienceQA" and i == n - 1 and n > 1:  # a text-only problem
            record.pop("image")
            record["text"] = record["text"].replace("<image>\n", "")
        else:
            _save(img, root / "datasets" / image)
        if task.name == "Grounding":
            record.update(answer_bbox=q["answer_bbox"], size=list(img.size))
        elif task.name == "ScienceQA":
            problems[qid] = {"question": f"What color is the {shape}?", "choices": q["choices"],
                             "answer": "AB".index(q["answer"]), "hint": "", "image": "image.png" if "image" in record
                             else None, "split": "test"}
        else:
            record["answer"] = q["answer"]
        captions.append(q.get("answer", ""))
        questions.append(record)
    path = root / task.question_file
    _dump(questions, path)
    if task.options.get("gt_file"):
        _dump(_coco_gt(questions, captions), root / task.options["gt_file"])
    if problems:
        _dump(problems, root / "datasets" / "ScienceQA" / "problems.json")
        _dump({"test": list(problems), "val": [], "train": []}, root / "datasets" / "ScienceQA" / "pid_splits.json")
    return path


def make_mmmergebench(root: Path, n: int = 3, seed: int = 0) -> None:
    """All twelve tasks under ``root/instructions`` and ``root/datasets``."""
    builtin = [t for t in task_defs.tasks(("seen", "unseen")) if t.folder.parent == task_defs.BUILTIN_DIR]
    for k, task in enumerate(builtin):
        make_task(root, task, n, random.Random(seed * 1000 + k))


# ----------------------------------------------------------------------------- POPE, MME, MMBench


def make_pope(folder: Path, per_split: int = 2, seed: int = 0) -> None:
    """``llava_pope_test.jsonl``, ``coco/coco_pope_<split>.json`` and ``val2014/`` images."""
    rng = random.Random(seed + 101)
    questions, qid = [], 0
    for split in POPE_SPLITS:
        labels = []
        for i in range(per_split):
            color, shape = _pick(rng)
            image = f"COCO_val2014_{qid:012d}.jpg"
            _save(draw(rng, color, shape), folder / "val2014" / image)
            asked = shape if i % 2 == 0 else rng.choice([s for s in SHAPES if s != shape])
            text = f"Is there a {asked} in the image?"
            qid += 1
            questions.append({"question_id": qid, "image": image, "text": f"{text}\n{PHRASE}", "category": split})
            labels.append({"question_id": i + 1, "image": image, "text": text,
                           "label": "yes" if asked == shape else "no"})
        _dump(labels, folder / "coco" / f"coco_pope_{split}.json", jsonl=True)
    _dump(questions, folder / "llava_pope_test.jsonl", jsonl=True)


def make_mme(folder: Path, seed: int = 0) -> None:
    """One image per MME subtask with its yes- and no-question, in both release layouts."""
    rng = random.Random(seed + 202)
    release = folder / "MME_Benchmark_release_version"
    questions = []
    for category in MME_CATEGORIES:
        color, shape = _pick(rng)
        other = rng.choice([c for c in COLORS if c != color])
        name = f"{category}_0.png"
        nested = category in MME_NESTED
        image_rel = f"{category}/images/{name}" if nested else f"{category}/{name}"
        _save(draw(rng, color, shape), release / image_rel)
        pairs = [(f"Is the {shape} {color}? Please answer yes or no.", "Yes"),
                 (f"Is the {shape} {other}? Please answer yes or no.", "No")]
        qa = release / category / ("questions_answers_YN" if nested else "") / f"{category}_0.txt"
        qa.parent.mkdir(parents=True, exist_ok=True)
        qa.write_text("".join(f"{q}\t{a}\n" for q, a in pairs), encoding="utf-8")
        for q, _ in pairs:
            questions.append({"question_id": f"{category}/{name}", "image": image_rel,
                              "text": f"{q}\n{PHRASE}", "category": category})
    _dump(questions, folder / "llava_mme.jsonl", jsonl=True)


def _b64_png(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def make_mmbench(folder: Path, n: int = 2, seed: int = 0) -> Path:
    """An MMBench dev TSV: ``n`` questions, each with its rotated copies (4 options; the last
    question has 3 options and a hint)."""
    rng = random.Random(seed + 303)
    header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "source",
              "l2-category", "comment", "split", "image"]
    rows = []
    for i in range(n):
        color, shape = _pick(rng)
        options = [color] + rng.sample([c for c in COLORS if c != color], 3 if i < n - 1 else 2)
        hint = f"The picture shows one {shape}." if i == n - 1 else ""
        image = _b64_png(draw(rng, color, shape))
        for k in range(len(options)):
            rot = options[k:] + options[:k]
            cells = rot + [""] * (4 - len(rot))
            rows.append([str(i + k * 1_000_000), f"What color is the {shape}?", hint, *cells,
                         "ABCD"[rot.index(color)], "attribute_recognition", "synthetic",
                         "fine-grained perception", "", "dev", image])
    path = folder / MMBENCH_TSV
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def make_benchmark_data(root: str | Path, n: int = 3, seed: int = 0) -> Path:
    """Everything in the module docstring under ``root`` (created; must not exist or be empty)."""
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists and is not empty; choose a new folder")
    make_mmmergebench(root, n, seed)
    make_pope(root / "eval" / "pope", seed=seed)
    make_mme(root / "eval" / "MME", seed=seed)
    make_mmbench(root / "eval" / "mmbench", seed=seed)
    return root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m llava.eval.synthetic_data", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="new folder to create")
    p.add_argument("--n", type=int, default=3, help="questions per MM-MergeBench task")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    def run() -> None:
        try:
            make_benchmark_data(args.out, args.n, args.seed)
        except FileExistsError as e:
            raise UserError(str(e)) from None
        print(f"wrote {args.out}")

    return cli_main(run)


if __name__ == "__main__":
    sys.exit(main())
