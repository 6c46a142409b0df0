"""A new task is ONE new folder: a toy task on the plug-in path ($LLAVA_TASKS_PATH) runs through the
runner, the scorer CLI, the pipeline and the results table with no other edit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from llava.eval import tasks

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOY_SPEC = """\
name = "Toy"
aliases = ["toy-task"]
group = "general"
question_file = "toy/questions.json"
image_folder = "toy/images"
max_new_tokens = 3
headline = "accuracy"

[preprocessing]
official = "pad"

[paper]
"RobustMerge" = 50.0
"""
TOY_SCORER = '''"""Toy: exact match, upper-cased."""
from llava.eval.scorers.exact import exact_match as judge, exact_task_scorer, parse_text as parse  # noqa: F401

score = exact_task_scorer("Toy")
'''
QUESTIONS = [{"question_id": i, "image": f"{i}.png", "text": f"Which colour is picture {i}?",
              "answer": answer} for i, answer in enumerate(["red", "green", "blue", "red"])]


def make_toy_task(root: Path) -> Path:
    """The whole task: one folder (its name need not be a Python identifier)."""
    folder = root / "toy task"
    folder.mkdir(parents=True)
    (folder / "task.toml").write_text(TOY_SPEC)
    (folder / "scorer.py").write_text(TOY_SCORER)
    return root


def make_toy_data(data: Path) -> Path:
    (data / "toy" / "images").mkdir(parents=True)
    for q in QUESTIONS:
        Image.new("RGB", (12, 10), q["answer"]).save(data / "toy" / "images" / q["image"])
    (data / "toy" / "questions.json").write_text(json.dumps(QUESTIONS))
    return data


def write_answers(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"question_id": q["question_id"], "prompt": q["text"], "text": t}) + "\n"
                            for q, t in zip(QUESTIONS, texts)))
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    return make_toy_task(root / "plugins"), make_toy_data(root / "data")


@pytest.fixture
def on_path(toy, monkeypatch):
    plugins, _ = toy
    monkeypatch.setenv(tasks.TASKS_PATH_ENV, str(plugins))
    return toy


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from llava.model.tiny import make_tiny_llava

    return make_tiny_llava(tmp_path_factory.mktemp("tiny") / "m")


def test_registry_finds_the_folder(on_path, monkeypatch):
    spec = tasks.get_task("toy-task")
    assert (spec.name, spec.group, spec.column, spec.folder.name) == ("Toy", "general", "Toy", "toy task")
    assert tasks.task_names("general") == ["POPE", "MME", "MMBench", "Toy"]
    assert spec.scorer.judge(spec.scorer.parse("RED"), "red")
    monkeypatch.delenv(tasks.TASKS_PATH_ENV)
    with pytest.raises(KeyError, match="unknown task 'Toy'"):
        tasks.get_task("Toy")
    monkeypatch.setattr(tasks, "_EXTRA_FOLDERS", [])
    tasks.register_task_folder(on_path[0])
    assert tasks.get_task("Toy").folder == spec.folder


def test_scorer_cli_scores_the_toy_task(on_path, tmp_path, capsys):
    from llava.eval.scorers.__main__ import main

    _, data = on_path
    right = write_answers(tmp_path / "right" / "answers.jsonl", [q["answer"].upper() for q in QUESTIONS])
    wrong = write_answers(tmp_path / "wrong" / "answers.jsonl", ["red", "red", "red", "blue"])
    for answers, expected in ((right, "100.00"), (wrong, "25.00")):
        assert main(["--task", "Toy", "--question-file", str(data / "toy/questions.json"),
                     "--answers-file", str(answers)]) == 0
        assert capsys.readouterr().out == f"Samples: 4\nAccuracy: {expected}%\n\n"
        result = json.loads((answers.parent / "result.json").read_text())
        assert (result["task"], f"{result['metrics']['accuracy']:.2f}") == ("Toy", expected)


def test_runner_pipeline_and_table(on_path, tiny, tmp_path, capsys):
    """The answer runner (--task Toy), the pipeline (--tasks Toy), the table (a Toy column)."""
    plugins, data = on_path
    answers = tmp_path / "runner" / "answers.jsonl"
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1]), tasks.TASKS_PATH_ENV: str(plugins),
           "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "llava.eval.model_vqa_loader", "--task", "Toy",
                           "--model-path", str(tiny.base), "--question-file", str(data / "toy/questions.json"),
                           "--image-folder", str(data / "toy/images"), "--answers-file", str(answers),
                           "--device", "cpu", "--no-progress"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [r["question_id"] for r in rows] == [0, 1, 2, 3]
    assert [r["prompt"] for r in rows] == [q["text"] for q in QUESTIONS]      # prompt "as_is"

    from llava.eval import pipeline
    from robustmerge import table

    results = tmp_path / "results"
    assert pipeline.main(["--model-path", str(tiny.base), "--data-root", str(data), "--results", str(results),
                          "--run-name", "robustmerge", "--tasks", "Toy", "--device", "cpu"]) == 0
    generated = json.loads((results / "robustmerge" / "Toy" / "result.json").read_text())
    assert generated["settings"]["generation"]["max_new_tokens"] == 3            # the spec's budget
    assert generated["settings"]["generation"]["preprocessing"] == "pad"
    write_answers(results / "perfect" / "Toy" / "answers.jsonl", [q["answer"] for q in QUESTIONS])
    assert pipeline.main(["--data-root", str(data), "--results", str(results), "--run-name", "perfect",
                          "--tasks", "toy-task", "--score-only"]) == 0
    assert "perfect / Toy: accuracy = 100.00 (4 questions" in capsys.readouterr().out

    assert table.main(["--results", str(results), "--runs", "perfect,robustmerge", "--reference", "paper"]) == 0
    out = capsys.readouterr().out
    general = out[out.index("### POPE / MME / MMBench / Toy"):]
    assert "| run | POPE | MME | MMBench | Toy |" in general
    assert "| perfect | – | – | – | 100.00 |" in general
    assert "| paper: RobustMerge | 87.2 | 1494.9 | 68.1 | 50.00 |" in general
    accuracy = generated["metrics"]["accuracy"]
    assert f"| robustmerge | – | – | – | {accuracy:.2f} |" in general
    assert f"| Δ vs paper |  |  |  | {accuracy - 50.0:+.2f} |" in general
