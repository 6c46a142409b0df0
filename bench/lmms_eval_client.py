"""Greedy answers of an hf-layout export through lmms-eval's `llava_hf` model (no project code).

    /path/to/lmms-venv/bin/python bench/lmms_eval_client.py EXPORT QUESTIONS.json OUT.json [--max-new-tokens 16]

Builds `lmms_eval.models.simple.llava_hf.LlavaHf(pretrained=EXPORT, device_map="cpu")` as
`--model llava_hf --model_args pretrained=EXPORT,device_map=cpu` does, and answers
QUESTIONS.json (a list of {"image", "question"}) through its `generate_until`, each question
as one `generate_until` request of a one-split in-memory task (lmms-eval's task datasets come
from the hub, which is unreachable here). Writes {"lmms_eval": version, "answers": [text]}.
"""
from __future__ import annotations

import argparse
import json
import sys


def answer(export: str, questions: list[dict], max_new_tokens: int = 16) -> dict:
    from importlib.metadata import version

    from lmms_eval.api.instance import Instance
    from lmms_eval.models.simple.llava_hf import LlavaHf
    from PIL import Image

    model = LlavaHf(pretrained=export, device_map="cpu", device="cpu", batch_size=1)
    docs = [{"image": Image.open(q["image"]).convert("RGB")} for q in questions]
    model.task_dict = {"local": {"test": docs}}
    requests = [Instance(request_type="generate_until", idx=0, metadata={"task": "local", "doc_id": i, "repeats": 1},
                         arguments=(q["question"], {"max_new_tokens": max_new_tokens, "temperature": 0},
                                    lambda doc: [doc["image"]], i, "local", "test"))
                for i, q in enumerate(questions)]
    texts = model.generate_until(requests)
    return {"lmms_eval": version("lmms_eval"), "answers": [t.strip() for t in texts]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("export")
    parser.add_argument("questions")
    parser.add_argument("out")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    with open(args.questions) as f:
        result = answer(args.export, json.load(f), args.max_new_tokens)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
