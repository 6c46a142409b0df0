"""End to end: tiny generated LLaVA + tiny generated benchmark data -> answers -> scores.

The data folder (llava.eval.synthetic_data) has every MM-MergeBench task (3 questions each),
POPE, MME and MMBench in their real layouts; the model is llava.model.tiny's (random weights,
so scores are near zero: the tests check counts, ranges and file formats, and that perfect
answers score 100 through the same wiring). Caption scoring runs Java (pycocoevalcap).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llava.eval import pipeline, runner, synthetic_data
from llava.eval.runner import RunnerError
from llava.eval.scorers.common import ScoreError
from llava.eval.tasks import tasks

REPO = Path(__file__).resolve().parents[1]
MAX_TOKENS = 6
#: headline range per task (MME perception: 10 subtasks x 200)
RANGES = {"MME": (0, 2000)}
CAPTION_TASKS = ("VizWiz-caption", "Flickr30k", "Screen2Words")
ALL_TASKS = pipeline.groups()["all"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from llava.model.tiny import make_tiny_llava, make_tiny_lora

    model = make_tiny_llava(tmp_path_factory.mktemp("tiny") / "m")
    lora = make_tiny_lora(model.base, model.root / "lora-task", seed=7)
    return model, lora


@pytest.fixture(scope="module")
def bundle(tiny):
    model, lora = tiny
    return runner.load_bundle(lora, model.base, device="cpu")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return synthetic_data.make_benchmark_data(tmp_path_factory.mktemp("bench") / "data")


def n_questions(data: Path, task: str) -> int:
    inputs = pipeline.task_inputs(task, data)
    if task == "MMBench":
        return len(inputs.question_file.read_text().splitlines()) - 1
    return len(runner.read_question_file(inputs.question_file))


@pytest.fixture(scope="module")
def full_run(bundle, data, tmp_path_factory) -> Path:
    """Every task, batch size 1: results/<run>/<task>/."""
    run = tmp_path_factory.mktemp("results") / "tiny-lora"
    for task in ALL_TASKS:
        pipeline.evaluate_task(bundle, task, data, run / pipeline.result_folder(task), max_new_tokens=MAX_TOKENS)
    return run


def test_data_folder_layout(data):
    assert sorted(p.name for p in (data / "instructions").iterdir()) == sorted(
        {t.instructions_folder for t in tasks(("seen", "unseen"))})
    assert (data / "datasets/ScienceQA/problems.json").is_file() and (data / "eval/pope/coco").is_dir()
    assert n_questions(data, "MME") == 28 and n_questions(data, "POPE") == 6 and n_questions(data, "MMBench") == 7
    again = synthetic_data.make_benchmark_data(data.parent / "again")   # deterministic
    for path in (p for p in data.rglob("*") if p.is_file()):
        assert path.read_bytes() == (again / path.relative_to(data)).read_bytes(), path


def test_every_task_generates_and_scores(full_run, data):
    assert sorted(p.name for p in full_run.iterdir()) == sorted(pipeline.result_folder(t) for t in ALL_TASKS)
    for task in ALL_TASKS:
        folder = full_run / pipeline.result_folder(task)
        result = json.loads((folder / "result.json").read_text())
        n = n_questions(data, task)
        answers = (folder / "answers.jsonl").read_text().splitlines()
        assert len(answers) == n, task
        assert all(set(json.loads(a)) >= {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
                   for a in answers)
        counts = result["counts"]
        assert (counts["questions"], counts["answers"], counts["missing"], counts["duplicates"], counts["extra"]) \
            == (n, n, 0, 0, 0), task
        value = result["metrics"][result["headline"]]
        low, high = RANGES.get(task, (0, 100 if task not in CAPTION_TASKS else 1000))
        assert isinstance(value, float) and math.isfinite(value) and low <= value <= high, (task, value)
        gen = result["settings"]["generation"]
        assert gen["max_new_tokens"] == MAX_TOKENS and gen["batch_size"] == 1 and gen["model_id"] == "lora-task"
        assert (folder / "scores.txt").read_text().strip()
    assert (full_run / "MMBench" / "submission.xlsx").is_file()
    rec = json.loads((full_run / "REC" / "result.json").read_text())
    assert rec["task"] == "Grounding" and rec["settings"]["generation"]["preprocessing"] == "crop"


def perfect_answers(task: str, data: Path) -> list[dict]:
    """Answers equal to the ground truth, in the runner's format."""
    inputs = pipeline.task_inputs(task, data)
    if task == "MMBench":
        from llava.eval.mmbench_data import read_mmbench_tsv

        rows = read_mmbench_tsv(inputs.question_file)
        return [{"question_id": r.index, "prompt": "", "text": r.answer} for r in rows]
    out = []
    problems = json.loads((data / "datasets/ScienceQA/problems.json").read_text()) if task == "ScienceQA" else {}
    labels = {}
    if task == "POPE":
        for split in ("adversarial", "popular", "random"):
            for row in runner.read_question_file(inputs.options["annotation_dir"] / f"coco_pope_{split}.json"):
                labels[(row["image"], row["text"])] = row["label"]
    for q in runner.read_question_file(inputs.question_file):
        if task == "ScienceQA":
            text = "AB"[problems[q["question_id"]]["answer"]]
        elif task == "Grounding":
            text = q["answer_bbox"]
        elif task == "POPE":
            text = labels[(q["image"], q["text"].split("\n")[0])].capitalize()
        elif task == "MME":
            gt = (inputs.options["gt_dir"] / q["category"]).rglob(f"{Path(q['image']).stem}.txt")
            truth = dict(line.split("\t") for f in gt for line in f.read_text().splitlines())
            text = truth[q["text"].split("\n")[0]]
        else:
            text = q["answer"]
        out.append({"question_id": q["question_id"], "prompt": runner.items_from_questions(
            [q], pipeline.get_spec(task), ".")[0].prompt.record, "text": text})
    return out


@pytest.mark.parametrize("task", [t for t in ALL_TASKS if t not in CAPTION_TASKS])
def test_perfect_answers_score_full_marks(task, data, tmp_path):
    """The synthetic data and the scorers fit together (strict protocol: id joins, full parsing)."""
    out = tmp_path / task
    out.mkdir()
    (out / "answers.jsonl").write_text("".join(json.dumps(a) + "\n" for a in perfect_answers(task, data)))
    result = pipeline.score_task(task, data, out, protocol="strict")
    best = {"MME": 2000.0}.get(task, 100.0)
    assert result["metrics"][result["headline"]] == pytest.approx(best), result["metrics"]


def test_results_tree_feeds_the_table(full_run):
    from robustmerge import table

    rows = table.make_table(full_run.parent, [full_run.name])
    assert all(rows[0].cells[c].value is not None for c in table.get_layout("paper").columns)


def test_mmbench_submission_survives_control_characters(data, tmp_path):
    rows = perfect_answers("MMBench", data)
    rows[0]["text"] += "\x1b\x7f\x00"
    (tmp_path / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = pipeline.score_task("MMBench", data, tmp_path)
    assert (tmp_path / "submission.xlsx").is_file() and result["counts"]["scored"] == 7


def test_batched_equals_single_end_to_end(bundle, data, full_run, tmp_path):
    """Batch size 4 on tasks with mixed lengths, a text-only question, shared ids, base64 images."""
    for task in ("ScienceQA", "ImageNet", "MME", "MMBench", "POPE"):
        folder = tmp_path / task
        pipeline.evaluate_task(bundle, task, data, folder, batch_size=4, max_new_tokens=MAX_TOKENS)
        single = full_run / pipeline.result_folder(task)
        assert (folder / "answers.jsonl").read_bytes() == (single / "answers.jsonl").read_bytes(), task
        batched, ref = (json.loads((f / "result.json").read_text()) for f in (folder, single))
        assert batched["metrics"] == ref["metrics"] and batched["settings"]["generation"]["batch_size"] == 4


def test_interrupted_then_resumed_run(bundle, data, full_run, tmp_path):
    task, folder = "MME", tmp_path / "MME"

    def crash(done):
        if done >= 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipeline.evaluate_task(bundle, task, data, folder, batch_size=4, max_new_tokens=MAX_TOKENS, on_batch=crash)
    assert not (folder / "result.json").exists()
    with open(folder / "answers.jsonl", "a") as f:
        f.write('{"question_id": "existence/exis')  # the write the crash cut short
    result = pipeline.evaluate_task(bundle, task, data, folder, max_new_tokens=MAX_TOKENS)
    reference = full_run / "MME"
    assert (folder / "answers.jsonl").read_bytes() == (reference / "answers.jsonl").read_bytes()
    assert result["metrics"] == json.loads((reference / "result.json").read_text())["metrics"]
    assert (result["settings"]["generation"]["answers_reused"], result["settings"]["generation"]["answers_generated"]) \
        == (8, 20)


def test_cli_runners_chunks_and_scorer_cli(tiny, data, full_run, tmp_path, capsys):
    """LLaVA's CLIs: model_vqa_loader in two chunks (then merged), model_vqa_mmbench, the scorer CLIs."""
    from llava.eval import model_vqa_loader, model_vqa_mmbench
    from llava.eval.scorers.mmbench import main as mmbench_main
    from llava.eval.scorers.__main__ import main as score_main

    model, lora = tiny
    inputs = pipeline.task_inputs("IconQA", data)
    common = ["--model-path", str(lora), "--model-base", str(model.base), "--device", "cpu", "--no-progress",
              "--max-new-tokens", str(MAX_TOKENS), "--log-level", "WARNING"]
    chunks = [tmp_path / f"2_{k}.jsonl" for k in range(2)]
    for k, chunk in enumerate(chunks):
        assert model_vqa_loader.main(["--question-file", str(inputs.question_file), "--image-folder",
                                      str(inputs.image_folder), "--task", "IconQA", "--temperature", "0",
                                      "--conv-mode", "vicuna_v1", "--num-chunks", "2", "--chunk-idx", str(k),
                                      "--answers-file", str(chunk), *common]) == 0
    assert [len(c.read_text().splitlines()) for c in chunks] == [2, 1]
    merged = tmp_path / "IconQA" / "answers.jsonl"
    runner.merge_answer_files(chunks, merged)
    assert merged.read_bytes() == (full_run / "IconQA" / "answers.jsonl").read_bytes()
    assert score_main(["--task", "IconQA", "--question-file", str(inputs.question_file),
                       "--answers-file", str(merged)]) == 0
    assert "Samples: 3" in capsys.readouterr().out
    assert json.loads((merged.parent / "result.json").read_text())["metrics"] == \
        json.loads((full_run / "IconQA" / "result.json").read_text())["metrics"]

    tsv = pipeline.task_inputs("MMBench", data).question_file
    answers = tmp_path / "MMBench" / "answers.jsonl"
    assert model_vqa_mmbench.main(["--question-file", str(tsv), "--single-pred-prompt", "--temperature", "0",
                                   "--answers-file", str(answers), *common]) == 0
    assert answers.read_bytes() == (full_run / "MMBench" / "answers.jsonl").read_bytes()
    row = json.loads(answers.read_text().splitlines()[0])
    assert row["round_id"] == 0 and row["option_char"] == ["A", "B", "C", "D"] and "Answer with" not in row["prompt"]
    assert mmbench_main(["--question-file", str(tsv), "--answers-file", str(answers)]) == 0
    assert (answers.parent / "submission.xlsx").is_file()


def test_cli_resume_after_limit_equals_full_run(tiny, data, full_run, tmp_path):
    from llava.eval import model_vqa_loader

    model, lora = tiny
    inputs = pipeline.task_inputs("POPE", data)
    argv = ["--model-path", str(lora), "--model-base", str(model.base), "--device", "cpu", "--no-progress",
            "--question-file", str(inputs.question_file), "--image-folder", str(inputs.image_folder),
            "--task", "POPE", "--max-new-tokens", str(MAX_TOKENS), "--answers-file", str(tmp_path / "a.jsonl"),
            "--log-level", "WARNING"]
    assert model_vqa_loader.main(argv + ["--limit", "2"]) == 0
    assert model_vqa_loader.main(argv + ["--limit", "1"]) == 2  # the file now holds answers beyond the limit
    assert model_vqa_loader.main(argv) == 0
    assert (tmp_path / "a.jsonl").read_bytes() == (full_run / "POPE" / "answers.jsonl").read_bytes()


def test_bad_inputs_give_clear_errors(tiny, data, full_run, tmp_path, capsys):
    from llava.eval import model_vqa_loader

    model, lora = tiny
    bad = tmp_path / "data"
    shutil.copytree(data / "instructions" / "TabMWP", bad / "instructions" / "TabMWP")
    (bad / "datasets").mkdir()
    base = ["--model-path", str(lora), "--model-base", str(model.base), "--device", "cpu", "--no-progress",
            "--image-folder", str(bad / "datasets"), "--answers-file", str(tmp_path / "out.jsonl")]
    qfile = bad / "instructions" / "TabMWP" / "test.json"
    assert model_vqa_loader.main(base + ["--question-file", str(qfile), "--task", "TabMWP"]) == 2
    assert "3 image file(s) not found" in capsys.readouterr().err            # missing images
    questions = json.loads(qfile.read_text())
    for name, rows, message in (
        ("dup.json", questions + questions[:1], "repeated question id"),
        ("noid.json", [{k: v for k, v in questions[0].items() if k != "question_id"}], "question_id"),
        ("broken.jsonl", None, "not JSON"),
    ):
        path = tmp_path / name
        path.write_text(json.dumps(rows) if rows is not None else '{"question_id": 1}\n{oops\n')
        assert model_vqa_loader.main(base + ["--question-file", str(path)]) == 2
        assert message in capsys.readouterr().err, name
    assert model_vqa_loader.main(base + ["--question-file", str(qfile), "--task", "NoSuchTask"]) == 2
    assert "unknown task" in capsys.readouterr().err
    copy = tmp_path / "own.jsonl"
    copy.write_text("".join(json.dumps(q) + "\n" for q in questions))
    argv = [a if a != str(tmp_path / "out.jsonl") else str(copy) for a in base]
    assert model_vqa_loader.main(argv + ["--question-file", str(copy), "--no-resume", "--image-folder",
                                         str(data / "datasets")]) == 2
    assert "would overwrite the question file" in capsys.readouterr().err and copy.read_text().count("\n") == 3

    # answers from another question file, malformed lines: the scorer refuses or counts
    with pytest.raises(ScoreError, match="only 1 of 3 answer ids occur in .*TabMWP/test.json.*another question file"):
        pipeline.score_task("TabMWP", data, tmp_path / "x", answers_file=full_run / "IconQA" / "answers.jsonl")
    broken = tmp_path / "broken" / "answers.jsonl"
    broken.parent.mkdir()
    good = (full_run / "TabMWP" / "answers.jsonl").read_text()
    broken.write_text(good + '{"question_id": 5, "te')
    with pytest.raises(ScoreError, match=r"broken/answers.jsonl: malformed answer lines: line 4 \(truncated last line"):
        pipeline.score_task("TabMWP", data, broken.parent)
    result = pipeline.score_task("TabMWP", data, broken.parent, skip_malformed=True, protocol="strict")
    assert result["counts"]["malformed_lines"] == 1 and result["counts"]["missing"] == 0
    # results never inside the data folder
    with pytest.raises(RunnerError, match="inside the data folder"):
        pipeline.evaluate_task(None, "TabMWP", data, data / "results")


def test_pipeline_cli_and_scripts(tiny, data, tmp_path):
    """The shell entry point with an env file (one process: loads the model once for both tasks)."""
    model, lora = tiny
    env = tmp_path / "eval.env"
    env.write_text(f"MODEL_BASE={model.base}\nMODEL_PATH={lora}\nDATA_ROOT={data}\nRESULTS={tmp_path / 'res'}\n"
                   "RUN_NAME=\nGPUS=\n")
    script = REPO / "scripts" / "eval_merge" / "TabMWP.sh"
    proc = subprocess.run(["bash", str(script), "--env-file", str(env), "--tasks", "TabMWP,POPE", "--",
                           "--max-new-tokens", "4", "--device", "cpu", "--log-level", "WARNING"],
                          cwd=REPO, capture_output=True, text=True, env={"PATH": _path(), "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "lora-task / TabMWP: accuracy" in proc.stdout and "lora-task / POPE: f1_mean" in proc.stdout
    assert (tmp_path / "res" / "lora-task" / "POPE" / "result.json").is_file()
    missing = subprocess.run(["bash", str(script)], cwd=REPO, capture_output=True, text=True, env={"PATH": _path()})
    assert missing.returncode == 2 and "DATA_ROOT" in missing.stderr


def _path() -> str:
    import os

    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


@pytest.mark.slow
def test_launcher_fans_out_chunks(tiny, data, full_run, tmp_path):
    """Three CPU chunks as subprocesses, merged in order = the in-process run."""
    from llava.eval import launch

    model, lora = tiny
    inputs = pipeline.task_inputs("MME", data)
    out = tmp_path / "MME" / "answers.jsonl"
    rc = launch.main(["--gpus", "", "--chunks-per-gpu", "3", "--answers-file", str(out), "--",
                      "--model-path", str(lora), "--model-base", str(model.base), "--device", "cpu",
                      "--question-file", str(inputs.question_file), "--image-folder", str(inputs.image_folder),
                      "--task", "MME", "--max-new-tokens", str(MAX_TOKENS), "--temperature", "0"])
    assert rc == 0
    assert out.read_bytes() == (full_run / "MME" / "answers.jsonl").read_bytes()
    chunk_files = sorted(p.name for p in (out.parent / "answers.chunks").glob("*.jsonl"))
    assert chunk_files == ["3_0.jsonl", "3_1.jsonl", "3_2.jsonl"]
