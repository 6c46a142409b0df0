"""Greedy answers of an hf-layout export through plain transformers (no project code imported).

    python bench/hf_client.py EXPORT QUESTIONS.json OUT.json [--max-new-tokens 16]

QUESTIONS.json: a list of {"image": path, "question": text}. Loads EXPORT with
`LlavaForConditionalGeneration` + `AutoProcessor` (what lmms-eval's `llava_hf`, and vLLM's
loader in spirit, do), builds the prompt with the processor's chat template, and writes
{"transformers": version, "loading": {missing, unexpected, mismatched}, "answers": [{"prompt",
"new_token_ids", "text"}]}. Runs under any transformers 4.4x-5.x, so `bench.hf_compat` can
call it with the python of a throw-away venv.
"""
from __future__ import annotations

import argparse
import json
import sys


def answer(export: str, questions: list[dict], max_new_tokens: int = 16, dtype=None, logits: bool = False) -> dict:
    """Load the export and answer every question greedily, one at a time (with `logits`, each
    answer also holds the first step's logits)."""
    import torch
    import transformers
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    kwargs = {}
    if dtype is not None:  # `dtype=` is 5.x's name, `torch_dtype=` 4.x's
        kwargs["dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"] = dtype
    model, info = LlavaForConditionalGeneration.from_pretrained(export, output_loading_info=True, **kwargs)
    model.eval()
    processor = AutoProcessor.from_pretrained(export)
    answers = []
    for q in questions:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q["question"]}]}]
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
        image = Image.open(q["image"]).convert("RGB")
        enc = processor(images=image, text=prompt, return_tensors="pt")
        if dtype is not None:
            enc["pixel_values"] = enc["pixel_values"].to(model.dtype)
        with torch.no_grad():
            out = model.generate(**enc, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                                 return_dict_in_generate=True, output_scores=logits)
        new = out.sequences[0, enc["input_ids"].shape[1]:].tolist()
        answers.append({"prompt": prompt, "new_token_ids": new,
                        "text": processor.tokenizer.decode(new, skip_special_tokens=True).strip()})
        if logits:
            answers[-1]["first_logits"] = out.scores[0][0].float().tolist()  # [V + added tokens]
    loading = {k: sorted(map(str, info.get(k) or [])) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    return {"transformers": transformers.__version__, "loading": loading, "answers": answers}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("export")
    parser.add_argument("questions")
    parser.add_argument("out")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    with open(args.questions) as f:
        questions = json.load(f)
    result = answer(args.export, questions, args.max_new_tokens)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
