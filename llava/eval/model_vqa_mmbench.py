"""Answer the MMBench TSV with a LLaVA model: LLaVA's ``model_vqa_mmbench`` CLI on the shared runner.

    python -m llava.eval.model_vqa_mmbench --model-path MODEL [--model-base BASE] \\
        --question-file mmbench_dev_20230712.tsv --answers-file answers.jsonl \\
        --single-pred-prompt [--lang en] [--conv-mode vicuna_v1] [--temperature 0] \\
        [--num-chunks N --chunk-idx K] [--batch-size 1] [--no-resume] [--limit N]

Each TSV row (the file already holds the option-rotated copies) becomes one question: the
base64 image with pad preprocessing, and LLaVA-1.5's single-prediction prompt
(:func:`llava.eval.mmbench_data.build_prompt`: ``[hint\\n]question``, ``\\nA. ...`` per
present option, and with ``--single-pred-prompt`` the instruction "Answer with the option's
letter from the given choices directly."). The stored ``prompt`` omits the instruction, as
LLaVA's runner; answers also carry LLaVA's ``round_id``, ``options`` and ``option_char``.
Defaults as LLaVA's (128 new tokens, temperature 0.2: pass ``--temperature 0`` for the
benchmark's greedy decoding, as ``scripts/v1_5/eval/mmbench.sh`` does). Generation, batching,
chunking and resuming are :mod:`llava.eval.runner`'s. Score with
``python -m llava.eval.scorers.mmbench`` (CircularEval and the submission spreadsheet).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from llava.eval.mmbench_data import ANSWER_INSTRUCTION, MMBenchItem, read_mmbench_tsv
from llava.eval.model_vqa_loader import LLAVA_TEMPERATURE, add_model_args, answer_items, settings_from_args
from llava.eval.runner import EvalItem, RunnerError, get_chunk
from llava.eval.tasks.prompts import Prompt
from llava.constants import DEFAULT_IMAGE_TOKEN
from robustmerge.errors import cli_main

logger = logging.getLogger(__name__)

INSTRUCTIONS = {"en": ANSWER_INSTRUCTION, "cn": "请直接回答选项字母。"}
MAX_NEW_TOKENS = 128
PREPROCESSING = "pad"


def mmbench_item(row: MMBenchItem, single_pred_prompt: bool = True, lang: str = "en") -> EvalItem:
    """One TSV row as a runner item (LLaVA's prompt; image decoded when it is generated)."""
    question = row.prompt(instruction="")
    text = row.prompt(instruction=INSTRUCTIONS[lang]) if single_pred_prompt else question
    has_image = row.has_image
    prompt = Prompt(text=f"{DEFAULT_IMAGE_TOKEN}\n{text}" if has_image else text, record=question, has_image=has_image)
    extra = {"round_id": 0, "options": list(row.options.values()), "option_char": list(row.options)}
    return EvalItem(row.index, prompt, PREPROCESSING, image_loader=row.image if has_image else None, extra=extra)


def mmbench_items(tsv: str | Path, single_pred_prompt: bool = True, lang: str = "en") -> list[EvalItem]:
    """Every row of an MMBench TSV as a runner item, in file order."""
    if lang not in INSTRUCTIONS:
        raise RunnerError(f"--lang must be one of {sorted(INSTRUCTIONS)}")
    return [mmbench_item(row, single_pred_prompt, lang) for row in read_mmbench_tsv(tsv)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.model_vqa_mmbench", description=__doc__.split("\n")[0])
    parser.add_argument("--question-file", required=True, help="MMBench TSV (base64 images)")
    parser.add_argument("--single-pred-prompt", action="store_true",
                        help="append the answer-with-a-letter instruction (LLaVA-1.5's evaluation uses it)")
    parser.add_argument("--lang", default="en", choices=sorted(INSTRUCTIONS))
    parser.add_argument("--all-rounds", action="store_true",
                        help="not supported: the TSV already holds the option-rotated copies")
    add_model_args(parser)
    return parser


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if args.all_rounds:
        raise RunnerError("--all-rounds is not supported: the MMBench TSV already holds the option-rotated "
                          "copies (index + k * 1e6), each answered once")
    torch.manual_seed(args.seed)
    settings = settings_from_args(args, MAX_NEW_TOKENS, LLAVA_TEMPERATURE)
    items = get_chunk(mmbench_items(args.question_file, args.single_pred_prompt, args.lang),
                      args.num_chunks, args.chunk_idx)
    if args.limit is not None:
        items = items[: args.limit]
    return answer_items(args, items, settings)


def main(argv: list[str] | None = None) -> int:
    return cli_main(lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
