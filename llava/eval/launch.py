"""Fan a runner's question chunks out over GPUs, then merge the chunk answer files in order.

    python -m llava.eval.launch [--gpus 0,1] [--chunks-per-gpu 2] --answers-file OUT.jsonl \\
        [--module llava.eval.model_vqa_loader] -- --model-path M --question-file Q --image-folder I --task T ...

Chunk ``k`` of ``N = len(gpus) * chunks-per-gpu`` runs as its own process, ``python -m MODULE
<args> --num-chunks N --chunk-idx k --answers-file OUT.chunks/N_k.jsonl``, with
``CUDA_VISIBLE_DEVICES`` set to its GPU (chunks ``k`` are assigned GPU by GPU: with GPUs 0,1
and 2 chunks each, chunks 0,1 on GPU 0 and 2,3 on GPU 1). ``--gpus`` defaults to
``$CUDA_VISIBLE_DEVICES``; without GPUs the chunks run on the CPU (``OMP_NUM_THREADS`` split
between them unless set). Each chunk's output goes to
``OUT.chunks/N_k.log``. When every chunk has succeeded the chunk files are concatenated in
chunk order (= question order) into OUT, checked to hold each question exactly once. A rerun
resumes every chunk from its own file.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from llava.eval.runner import RunnerError, merge_answer_files
from robustmerge.errors import cli_main

logger = logging.getLogger(__name__)

LOADER = "llava.eval.model_vqa_loader"
MMBENCH = "llava.eval.model_vqa_mmbench"


def gpu_slots(gpus: str | None, chunks_per_gpu: int = 1) -> list[str | None]:
    """One entry per chunk: its GPU id, or None (CPU) when no GPU is given or visible."""
    if chunks_per_gpu < 1:
        raise RunnerError("--chunks-per-gpu must be at least 1")
    spec = gpus if gpus is not None else os.environ.get("CUDA_VISIBLE_DEVICES", "")
    ids = [g.strip() for g in spec.split(",") if g.strip() and g.strip() != "-1"]
    if not ids:
        return [None] * chunks_per_gpu
    return [g for g in ids for _ in range(chunks_per_gpu)]


def chunk_paths(answers_file: Path, n: int) -> list[Path]:
    """``OUT.chunks/N_k.jsonl`` for k in 0..N-1 (LLaVA's ``${CHUNKS}_${IDX}.jsonl`` naming)."""
    folder = answers_file.parent / f"{answers_file.stem}.chunks"
    return [folder / f"{n}_{k}.jsonl" for k in range(n)]


def launch_chunks(module: str, runner_args: Sequence[str], answers_file: str | os.PathLike,
                  slots: Sequence[str | None], expected_keys: Sequence[str] | None = None,
                  key_with_prompt: bool = False) -> int:
    """Run every chunk as a subprocess (in parallel), wait, merge; returns the number of answers."""
    out = Path(answers_file)
    n = len(slots)
    files = chunk_paths(out, n)
    files[0].parent.mkdir(parents=True, exist_ok=True)
    procs = []
    for k, (gpu, chunk) in enumerate(zip(slots, files)):
        env = dict(os.environ)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        elif "OMP_NUM_THREADS" not in env:  # CPU chunks share the cores instead of oversubscribing them
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n))
        cmd = [sys.executable, "-m", module, *runner_args, "--answers-file", str(chunk),
               "--num-chunks", str(n), "--chunk-idx", str(k), "--no-progress"]
        log = open(chunk.with_suffix(".log"), "w", encoding="utf-8")
        logger.info("chunk %d/%d on %s: %s", k, n, f"GPU {gpu}" if gpu is not None else "CPU", chunk)
        procs.append((k, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    failed = []
    for k, proc, log in procs:
        rc = proc.wait()
        log.close()
        if rc != 0:
            failed.append(k)
    if failed:
        tails = "; ".join(f"chunk {k}: {_last_line(files[k].with_suffix('.log'))}" for k in failed)
        raise RunnerError(f"{len(failed)} of {n} chunk(s) failed ({tails}); logs in {files[0].parent}; "
                          "rerun to resume")
    count = merge_answer_files(files, out, expected_keys, key_with_prompt)
    logger.info("merged %d chunk files into %s (%d answers)", n, out, count)
    return count


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "empty log"


def fan_out(task: str, args: argparse.Namespace, answers_file: Path, slots: Sequence[str | None]) -> int:
    """Chunked generation of one pipeline task (``llava.eval.pipeline``'s flags in ``args``)."""
    from llava.eval.pipeline import get_spec, task_inputs, task_items

    inputs = task_inputs(task, args.data_root)
    own_runner = getattr(get_spec(task).scorer, "RUNNER", None)   # (module, flags) of a task with its own CLI
    if own_runner is not None:
        module, runner_args = own_runner[0], ["--question-file", str(inputs.question_file), *own_runner[1]]
    else:
        module = LOADER
        runner_args = ["--question-file", str(inputs.question_file), "--image-folder", str(inputs.image_folder),
                       "--task", task, "--protocol", args.protocol]
    runner_args += ["--model-path", args.model_path, "--temperature", str(args.temperature),
                    "--batch-size", str(args.batch_size), "--device", args.device]
    for flag, value in (("--model-base", args.model_base), ("--model-id", args.model_id),
                        ("--max-new-tokens", args.max_new_tokens), ("--dtype", args.dtype),
                        ("--vision-tower", args.vision_tower), ("--limit", args.limit)):
        if value is not None:
            runner_args += [flag, str(value)]
    if not args.resume:
        runner_args.append("--no-resume")
    items = task_items(task, args.data_root, args.protocol)
    expected = [it.key for it in items] if args.limit is None else None
    return launch_chunks(module, runner_args, answers_file, slots, expected, any(it.key_with_prompt for it in items))


def expected_keys_from_args(module: str, runner_args: Sequence[str]) -> tuple[list[str] | None, bool]:
    """The question keys a full run of ``module`` answers, and whether keys include the prompt
    (``None`` keys with --limit or an unknown module: only duplicates are then checked)."""
    parser = argparse.ArgumentParser(add_help=False)
    for flag in ("--question-file", "--image-folder", "--task", "--limit"):
        parser.add_argument(flag)
    parser.add_argument("--protocol", default="official")
    parser.add_argument("--single-pred-prompt", action="store_true")
    known, _ = parser.parse_known_args(list(runner_args))
    if known.limit is not None or not known.question_file:
        return None, False
    if module == LOADER:
        from llava.eval.model_vqa_loader import task_or_error
        from llava.eval.runner import items_from_questions, read_question_file

        items = items_from_questions(read_question_file(known.question_file), task_or_error(known.task),
                                     known.image_folder or ".", known.protocol)
    elif module == MMBENCH:
        from llava.eval.model_vqa_mmbench import mmbench_items

        items = mmbench_items(known.question_file, known.single_pred_prompt)
    else:
        return None, False
    return [it.key for it in items], any(it.key_with_prompt for it in items)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, runner_args = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(prog="python -m llava.eval.launch", description=__doc__.split("\n")[0])
    p.add_argument("--answers-file", required=True, help="merged answers file")
    p.add_argument("--gpus", default=None, help="comma-separated GPU ids (default: $CUDA_VISIBLE_DEVICES)")
    p.add_argument("--chunks-per-gpu", type=int, default=1)
    p.add_argument("--module", default=LOADER, help=f"runner module ({LOADER} or {MMBENCH})")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(own)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")

    def run() -> None:
        bad = [f for f in ("--answers-file", "--num-chunks", "--chunk-idx") if f in runner_args]
        if bad:
            raise RunnerError(f"{bad} are set by the launcher; remove them after '--'")
        slots = gpu_slots(args.gpus, args.chunks_per_gpu)
        expected, with_prompt = expected_keys_from_args(args.module, runner_args)
        count = launch_chunks(args.module, runner_args, args.answers_file, slots, expected, with_prompt)
        print(f"wrote {args.answers_file} ({count} answers from {len(slots)} chunks)")

    return cli_main(run)


if __name__ == "__main__":
    sys.exit(main())
