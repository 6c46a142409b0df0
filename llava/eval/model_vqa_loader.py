"""Answer a question file with a LLaVA model: LLaVA's ``model_vqa_loader`` CLI, one runner for every task.

    python -m llava.eval.model_vqa_loader --model-path MODEL [--model-base BASE] \\
        --question-file Q.json[l] --image-folder IMAGES --answers-file answers.jsonl \\
        [--task ScienceQA] [--conv-mode vicuna_v1] [--temperature 0] \\
        [--num-chunks N --chunk-idx K] [--batch-size 1] [--max-new-tokens T] [--no-resume] [--limit N]

``--task NAME`` takes the prompt transform, image preprocessing (``--protocol`` picks the
official or strict one) and generation budget from the task's spec (``llava/eval/tasks/<folder>/task.toml``:
the twelve MM-MergeBench tasks, POPE, MME, and plug-in tasks from ``$LLAVA_TASKS_PATH``); without
it LLaVA's defaults apply (prompt as is, the model's
``image_aspect_ratio`` preprocessing, 128 new tokens, temperature 0.2). ``--max-new-tokens``
and ``--temperature`` override either. Question files may be JSON lists or JSONL.

Reruns resume (``--no-resume`` starts over); see :mod:`llava.eval.runner`. Bad input (missing
files or images, repeated ids, an answers file of other questions) exits with status 2 and one
``error:`` line.
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch

from llava.conversation import conv_templates
from llava.eval.runner import (
    GenerationSettings, RunnerError, check_items, get_chunk, items_from_questions, load_bundle, read_question_file,
    run_items,
)
from llava.eval.scorers.common import PROTOCOLS
from llava.eval.tasks import get_task
from robustmerge.errors import cli_main

logger = logging.getLogger(__name__)

LLAVA_TEMPERATURE = 0.2   # model_vqa_loader's default when no task is named
LLAVA_MAX_NEW_TOKENS = 128


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Flags shared by the runners: model, chunking, decoding, resume."""
    parser.add_argument("--model-path", required=True,
                        help="LLaVA folder: full model, LoRA/merged adapter, projector run")
    parser.add_argument("--model-base", default=None, help="base model folder (for adapter and projector folders)")
    parser.add_argument("--model-id", default=None,
                        help="model_id written into the answers (default: from --model-path)")
    parser.add_argument("--answers-file", required=True, help="output JSONL (resumed if it exists)")
    parser.add_argument("--conv-mode", default="vicuna_v1", choices=sorted(conv_templates))
    parser.add_argument("--num-chunks", "--num_chunks", dest="num_chunks", type=int, default=1)
    parser.add_argument("--chunk-idx", "--chunk_idx", dest="chunk_idx", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--top_p", "--top-p", dest="top_p", type=float, default=None)
    parser.add_argument("--num_beams", "--num-beams", dest="num_beams", type=int, default=1)
    parser.add_argument("--max_new_tokens", "--max-new-tokens", dest="max_new_tokens", type=int, default=None)
    parser.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=1,
                        help="questions per generate call (left padding); 1, the default, is what paper tables use. "
                             "In float32 batched greedy answers equal batch size 1 (measured: 64/64 at 8 and 16); in "
                             "bf16/fp16 they can differ, because batching can change the rounding of the matmuls: "
                             "64/64 equal on the tiny CPU model at batch 8 and 16, but at LLaVA-7B sizes (bf16, CPU) 1 of "
                             "3 answers changed at its third token in a batch of 2 (docs/benchmarks.md)")
    parser.add_argument("--same-length-batches", action="store_true",
                        help="batch only prompts of the same token length (no padding in a batch); fewer, "
                             "smaller batches. It does not make 16-bit batches match batch size 1: the changed 7B answer "
                             "above was in an unpadded batch (docs/benchmarks.md)")
    parser.add_argument("--resume", dest="resume", action="store_true", default=True,
                        help="keep the answers already in --answers-file (default)")
    parser.add_argument("--no-resume", dest="resume", action="store_false", help="overwrite --answers-file")
    parser.add_argument("--limit", type=int, default=None, help="answer only the first N questions (of the chunk)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--dtype", default=None, help="fp32, bf16 or fp16 (default: fp16 on CUDA, fp32 on CPU)")
    parser.add_argument("--vision-tower", default=None, help="local CLIP tower folder (overrides mm_vision_tower)")
    parser.add_argument("--seed", type=int, default=0, help="torch seed (matters for sampling only)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--log-level", default="INFO")


def settings_from_args(args: argparse.Namespace, default_tokens: int, default_temperature: float) -> GenerationSettings:
    return GenerationSettings(
        conv_mode=args.conv_mode,
        temperature=default_temperature if args.temperature is None else args.temperature,
        top_p=args.top_p, num_beams=args.num_beams,
        max_new_tokens=args.max_new_tokens or default_tokens, batch_size=args.batch_size,
        same_length_batches=getattr(args, "same_length_batches", False),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llava.eval.model_vqa_loader", description=__doc__.split("\n")[0])
    parser.add_argument("--question-file", required=True, help="questions: JSON list or JSONL")
    parser.add_argument("--image-folder", required=True, help="folder the questions' image paths are relative to")
    parser.add_argument("--task", default=None,
                        help="task definition from llava/eval/tasks/ or $LLAVA_TASKS_PATH (default: LLaVA's)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="official",
                        help="which preprocessing a task uses: official (the original runner's) or strict")
    add_model_args(parser)
    return parser


def task_or_error(name: str | None):
    """The task definition named by ``--task`` (None without it)."""
    if not name:
        return None
    try:
        return get_task(name)
    except KeyError as e:
        raise RunnerError(f"--task: {e.args[0]}") from None


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    torch.manual_seed(args.seed)
    task = task_or_error(args.task)
    settings = settings_from_args(args, task.max_new_tokens if task else LLAVA_MAX_NEW_TOKENS,
                                  0.0 if task else LLAVA_TEMPERATURE)
    questions = get_chunk(read_question_file(args.question_file), args.num_chunks, args.chunk_idx)
    if args.limit is not None:
        questions = questions[: args.limit]
    items = items_from_questions(questions, task, args.image_folder, args.protocol)
    return answer_items(args, items, settings)


def answer_items(args: argparse.Namespace, items: list, settings: GenerationSettings) -> int:
    """Check the items, load the model named by ``args`` and answer into ``args.answers_file``
    (shared by this CLI and :mod:`llava.eval.model_vqa_mmbench`)."""
    check_items(items, args.question_file)  # before the (slow) model load
    bundle = load_bundle(args.model_path, args.model_base, device=args.device, dtype=args.dtype,
                         vision_tower=args.vision_tower, model_id=args.model_id)
    summary = run_items(bundle, items, args.answers_file, settings, resume=args.resume,
                        source=args.question_file, progress=not args.no_progress)
    logger.info("%s", summary.line())
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli_main(lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
