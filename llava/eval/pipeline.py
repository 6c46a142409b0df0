"""Generate answers and score them: one task, one model, one results folder.

In process (the demo, tests)::

    bundle = ModelBundle.from_loaded(load_pretrained_model(...), model_id="robustmerge")
    result = evaluate_task(bundle, "ScienceQA", data_root, "results/robustmerge/ScienceQA")

writes ``answers.jsonl`` (resumable, :mod:`llava.eval.runner`), ``result.json`` (the scorer's
record, with the generation settings under ``settings.generation``), ``scores.txt`` (the lines
the scorer prints), the original scorer's side files, and for MMBench ``submission.xlsx``.

Command line (what ``scripts/eval_merge/*.sh`` and ``scripts/v1_5/eval/*.sh`` call)::

    python -m llava.eval.pipeline --model-path M [--model-base B] --data-root D \\
        --results results --run-name NAME --tasks all|seen|unseen|general|ScienceQA,POPE,... \\
        [--gpus 0,1 --chunks-per-gpu 2] [--batch-size 1] [--protocol official]

With one chunk (the default) the model is loaded once for all tasks; with more, each task's
questions are fanned out over the GPUs by :mod:`llava.eval.launch` and merged before scoring.

Data layout under ``--data-root`` (``playground/data`` in the README):

- MM-MergeBench: ``instructions/<question file of the task>`` (see ``llava/eval/tasks/<folder>/task.toml``),
  images under ``datasets/``, ScienceQA's ``datasets/ScienceQA/{problems,pid_splits}.json``;
- POPE: ``eval/pope/llava_pope_test.jsonl``, labels ``eval/pope/coco/``, images ``eval/pope/val2014/``;
- MME: ``eval/MME/llava_mme.jsonl``, ``eval/MME/MME_Benchmark_release_version/`` (images and ground truth);
- MMBench: ``eval/mmbench/mmbench_dev_20230712.tsv``.

Results go to ``<results>/<run-name>/<folder>/`` where the folder is the results table's column
name (:func:`result_folder`, the spec's ``column``: ``REC`` for Grounding, ``VizWiz`` for
VizWiz-caption, else the task). Every path above comes from the task specs; plug-in tasks
(``$LLAVA_TASKS_PATH``) name theirs the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from llava.eval import tasks as task_defs
from llava.eval.runner import (
    GenerationSettings, ModelBundle, RunnerError, RunSummary, items_from_questions, read_question_file, run_items,
)
from llava.eval.scorers.common import PROTOCOLS, ScoreError, write_result, write_text_atomic
from llava.eval.tasks import ScoreInputs, TaskSpec
from llava.eval.tasks.benchmark import CONV_MODE
from robustmerge.errors import cli_main

logger = logging.getLogger(__name__)

ANSWERS, RESULT, SCORES = "answers.jsonl", "result.json", "scores.txt"


def groups() -> dict[str, tuple[str, ...]]:
    """Task groups for ``--tasks``: all, mergebench (seen + unseen), seen, unseen, general."""
    return {"all": tuple(task_defs.task_names()), "mergebench": tuple(task_defs.task_names(("seen", "unseen"))),
            **{g: tuple(task_defs.task_names(g)) for g in task_defs.GROUPS}}


def get_spec(name: str) -> TaskSpec:
    """The task called ``name`` (aliases, case-insensitive), or ``RunnerError`` with the choices."""
    try:
        return task_defs.get_task(name)
    except KeyError:
        raise RunnerError(f"unknown task {name!r}; choose from {', '.join(task_defs.task_names())} or a group "
                          f"({', '.join(groups())})") from None


def canonical(name: str) -> str:
    """Canonical task name (aliases accepted; case-insensitive)."""
    return get_spec(name).name


def expand_tasks(spec: str | Sequence[str]) -> list[str]:
    """``"all"``, ``"seen,POPE"``, ``["ScienceQA", "rec"]`` ... -> canonical names, in order, once each."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    known = groups()
    out: list[str] = []
    for name in (n.strip() for n in names if n.strip()):
        for task in known.get(name.lower(), (canonical(name),)):
            if task not in out:
                out.append(task)
    return out


def result_folder(task: str) -> str:
    """The folder name of ``task`` under ``results/<run>/`` (the results table's column)."""
    return get_spec(task).column


@dataclass(frozen=True)
class TaskInputs:
    """Where a task's inputs live under the data root (paths from its spec)."""

    question_file: Path
    image_folder: Path | None
    options: dict = dataclasses.field(default_factory=dict)   # scorer inputs by flag destination


def task_inputs(task: str, data_root: str | os.PathLike) -> TaskInputs:
    """The input paths of ``task`` under ``data_root``."""
    root, spec = Path(data_root), get_spec(task)
    return TaskInputs(root / spec.question_file, root / spec.image_folder if spec.image_folder else None,
                      {k: root / v for k, v in spec.options.items()})


# ----------------------------------------------------------------------------- generation


def task_items(task: str, data_root: str | os.PathLike, protocol: str = "official",
               limit: int | None = None, num_chunks: int = 1, chunk_idx: int = 0) -> list:
    """The runner items of ``task`` (chunked, then limited)."""
    from llava.eval.runner import get_chunk

    inputs, spec = task_inputs(task, data_root), get_spec(task)
    if not inputs.question_file.is_file():
        raise RunnerError(f"{inputs.question_file}: question file of {task} not found; check --data-root")
    build = getattr(spec.scorer, "build_items", None)     # a task with its own item builder (MMBench)
    if build is not None:
        items = build(spec, inputs.question_file, inputs.image_folder, protocol)
    else:
        items = read_question_file(inputs.question_file)
    items = get_chunk(items, num_chunks, chunk_idx)
    items = items[:limit] if limit is not None else items
    if build is not None:
        return items
    return items_from_questions(items, spec, inputs.image_folder, protocol)


def task_settings(task: str, batch_size: int = 1, max_new_tokens: int | None = None,
                  temperature: float = 0.0, conv_mode: str = CONV_MODE) -> GenerationSettings:
    """The task's decoding settings (its max new tokens unless overridden)."""
    default = get_spec(task).max_new_tokens
    return GenerationSettings(conv_mode=conv_mode, temperature=temperature, max_new_tokens=max_new_tokens or default,
                              batch_size=batch_size)


def generate_answers(bundle: ModelBundle, task: str, data_root: str | os.PathLike, answers_file: str | os.PathLike,
                     settings: GenerationSettings, *, protocol: str = "official", limit: int | None = None,
                     resume: bool = True, on_batch: Callable[[int], None] | None = None,
                     progress: bool = False) -> RunSummary:
    """Answer every question of ``task`` into ``answers_file`` (resumable)."""
    items = task_items(canonical(task), data_root, protocol, limit)
    return run_items(bundle, items, answers_file, settings, resume=resume, on_batch=on_batch, progress=progress,
                     source=str(task_inputs(canonical(task), data_root).question_file))


# ----------------------------------------------------------------------------- scoring


def score_task(task: str, data_root: str | os.PathLike, out_dir: str | os.PathLike, *,
               answers_file: str | os.PathLike | None = None, protocol: str = "official",
               skip_malformed: bool = False, generation: dict | None = None) -> dict:
    """Score ``answers_file`` (default ``out_dir/answers.jsonl``) and write ``result.json``,
    ``scores.txt`` and the scorer's side files into ``out_dir``. Returns the result record."""
    task = canonical(task)
    if protocol not in PROTOCOLS:
        raise RunnerError(f"protocol must be one of {PROTOCOLS}")
    out = Path(out_dir)
    answers = Path(answers_file) if answers_file else out / ANSWERS
    inputs = task_inputs(task, data_root)
    scored = get_spec(task).score(ScoreInputs(str(answers), str(inputs.question_file),
                                              {k: str(v) for k, v in inputs.options.items()},
                                              skip_malformed, str(out / RESULT)), protocol)
    if scored.result is None:
        raise ScoreError(scored.stdout.strip())
    if generation:
        scored.result["settings"]["generation"] = generation
    write_result(out / RESULT, scored.result)
    protected = {answers.resolve(), (out / RESULT).resolve()}
    for name, text in {SCORES: scored.stdout, **scored.side_files}.items():
        if (out / name).resolve() not in protected:
            write_text_atomic(out / name, text)
    return scored.result


def evaluate_task(bundle: ModelBundle, task: str, data_root: str | os.PathLike, out_dir: str | os.PathLike, *,
                  protocol: str = "official", batch_size: int = 1, max_new_tokens: int | None = None,
                  temperature: float = 0.0, limit: int | None = None, resume: bool = True,
                  skip_malformed: bool = False, on_batch: Callable[[int], None] | None = None,
                  progress: bool = False) -> dict:
    """Generate ``task``'s answers with an already-loaded model and score them.

    Args:
        bundle: tokenizer, model, image processor and model id (swap adapters by passing another).
        task: a task name (the twelve MM-MergeBench tasks, POPE, MME, MMBench; aliases accepted).
        data_root: the data folder (layout in the module docstring); never written to.
        out_dir: gets answers.jsonl, result.json, scores.txt and the scorer's side files.
        protocol: "official" (paper tables) or "strict"; also picks the task's preprocessing.
        batch_size: questions per generate call (1 = the paper's setting).
        max_new_tokens: override the task's budget (smoke tests).
        temperature: 0 = greedy (the benchmark's decoding).
        limit: answer only the first N questions (a scorer may then refuse, e.g. official captions).
        resume: keep answers already in ``out_dir/answers.jsonl``.
        skip_malformed: let the scorer skip malformed answer lines (counted) instead of failing.
        on_batch: progress callback (answers generated so far).
        progress: tqdm bar.

    Returns:
        The result record written to ``out_dir/result.json``.
    """
    task = canonical(task)
    out = Path(out_dir)
    _refuse_inside(out, Path(data_root))
    settings = task_settings(task, batch_size, max_new_tokens, temperature)
    summary = generate_answers(bundle, task, data_root, out / ANSWERS, settings, protocol=protocol, limit=limit,
                               resume=resume, on_batch=on_batch, progress=progress)
    generation = {**dataclasses.asdict(settings), "model_id": bundle.model_id, "protocol": protocol,
                  "preprocessing": _preprocessing(task, protocol), "limit": limit,
                  "answers_reused": summary.reused, "answers_generated": summary.generated,
                  "seconds": round(summary.seconds, 3)}
    return score_task(task, data_root, out, protocol=protocol, skip_malformed=skip_malformed, generation=generation)


def _preprocessing(task: str, protocol: str) -> str:
    return get_spec(task).preprocessing_for(protocol)


def _refuse_inside(out: Path, data_root: Path) -> None:
    """Results never go into the data folder."""
    o, d = out.resolve(), data_root.resolve()
    if o == d or d in o.parents:
        raise RunnerError(f"{out}: results must not be written inside the data folder {data_root}; "
                          "choose another --results folder")


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llava.eval.pipeline", description=__doc__.split("\n")[0])
    p.add_argument("--model-path",
                   help="model to evaluate (full model, LoRA/merged adapter); not needed with --score-only")
    p.add_argument("--model-base", default=None, help="base model for adapter folders")
    p.add_argument("--adapters-dir", default=None,
                   help="evaluate each task with its own adapter, the sub-folder named like the task (Eval_direct)")
    p.add_argument("--model-id", default=None, help="model_id in the answers (default: from --model-path)")
    p.add_argument("--data-root", required=True, help="benchmark data folder (see the module docstring)")
    p.add_argument("--results", default="results", help="results folder (default: results)")
    p.add_argument("--run-name", required=True, help="results go to <results>/<run-name>/<task>/")
    p.add_argument("--tasks", default="all",
                   help="comma-separated tasks or groups (all, mergebench, seen, unseen, general); default all")
    p.add_argument("--protocol", choices=PROTOCOLS, default="official")
    p.add_argument("--batch-size", type=int, default=1,
                   help="questions per generate call (default 1, the paper tables' setting); in bf16/fp16 batched "
                        "greedy answers can differ from batch size 1 (see the runner's --batch-size and "
                        "docs/benchmarks.md)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="override every task's budget")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--limit", type=int, default=None, help="first N questions per task (smoke tests)")
    p.add_argument("--no-resume", dest="resume", action="store_false", default=True)
    p.add_argument("--skip-malformed", action="store_true", help="scorers skip malformed answer lines")
    p.add_argument("--score-only", action="store_true", help="score existing answers.jsonl files, generate nothing")
    p.add_argument("--gpus", default=None, help="GPU ids for chunked runs (default: $CUDA_VISIBLE_DEVICES)")
    p.add_argument("--chunks-per-gpu", type=int, default=1, help="chunks per GPU; >1 chunk in all uses subprocesses")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default=None)
    p.add_argument("--vision-tower", default=None)
    p.add_argument("--log-level", default="INFO")
    return p


def find_adapter(adapters_dir: str | os.PathLike, task: str) -> Path:
    """The adapter folder of ``task`` in ``adapters_dir``: a sub-folder named like the task, its
    results folder or its question folder (case-insensitive), e.g. ``Grounding``/``REC``."""
    root = Path(adapters_dir)
    if not root.is_dir():
        raise RunnerError(f"{root}: adapters folder not found; check --adapters-dir")
    names = [task, result_folder(task), get_spec(task).instructions_folder]
    wanted = {n.lower() for n in names}
    found = sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower() in wanted)
    if len(found) != 1:
        what = "no" if not found else "several"
        raise RunnerError(f"{root}: {what} adapter folder for {task} (looked for {sorted(set(names))}, any case)")
    return found[0]


def _run(args: argparse.Namespace) -> int:
    from llava.eval.launch import fan_out, gpu_slots

    names = expand_tasks(args.tasks)
    run_dir = Path(args.results) / args.run_name
    slots = gpu_slots(args.gpus, args.chunks_per_gpu)
    if not args.score_only and not (args.model_path or args.adapters_dir):
        raise RunnerError("give --model-path (or --adapters-dir) unless --score-only")
    if args.adapters_dir and not args.model_base:
        raise RunnerError("--adapters-dir needs --model-base (the adapters' base model)")
    bundle, model_path = None, args.model_path
    for task in names:
        out = run_dir / result_folder(task)
        _refuse_inside(out, Path(args.data_root))
        start = time.perf_counter()
        if args.adapters_dir and not args.score_only:
            model_path, bundle = str(find_adapter(args.adapters_dir, task)), None
            args = argparse.Namespace(**{**vars(args), "model_path": model_path})
        if args.score_only:
            result = score_task(task, args.data_root, out, protocol=args.protocol, skip_malformed=args.skip_malformed)
        elif len(slots) > 1:
            fan_out(task, args, out / ANSWERS, slots)
            result = score_task(task, args.data_root, out, protocol=args.protocol, skip_malformed=args.skip_malformed,
                                generation={"model_path": model_path, "chunks": len(slots),
                                            "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
                                            "protocol": args.protocol})
        else:
            if bundle is None:
                from llava.eval.runner import load_bundle

                bundle = load_bundle(model_path, args.model_base, device=args.device, dtype=args.dtype,
                                     vision_tower=args.vision_tower, model_id=args.model_id)
            result = evaluate_task(bundle, task, args.data_root, out, protocol=args.protocol,
                                   batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                                   temperature=args.temperature, limit=args.limit, resume=args.resume,
                                   skip_malformed=args.skip_malformed, progress=True)
        value = result["metrics"][result["headline"]]
        print(f"{args.run_name} / {task}: {result['headline']} = {value:.2f} "
              f"({result['counts']['questions']} questions, {time.perf_counter() - start:.0f}s) -> {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    return cli_main(lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
