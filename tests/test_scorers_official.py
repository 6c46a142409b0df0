"""The `official` protocol reproduces the original scorers on the shared fixtures, bit for bit.

Ground truth: ``<fixtures>/official_scores/<case>/expected`` (stdout, the files the original
wrote, and ``expected.json`` with the printed numbers as strings). Each case runs the CLI in
process from the fixture folder, as the original commands did, writing into ``tmp_path``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import FIXTURES, needs_fixture
from llava.eval.scorers.__main__ import main


OFFICIAL = FIXTURES / "official_scores"
needs_fixtures = needs_fixture("official_scores")
needs_java = pytest.mark.skipif(shutil.which("java") is None,
                                reason="Java is needed for pycocoevalcap's PTB tokenizer and METEOR")

# case folder -> (CLI arguments, metric key -> parsed_stdout key)
ACCURACY = {"accuracy": "Accuracy_percent_str"}


def _args(task: str, input_flag: str, input_file: str, answers: str) -> list[str]:
    return ["--task", task, input_flag, input_file, "--answers-file", f"results/{answers}/merge.jsonl"]


# case folder: (task, question file under instructions/, answers folder under results/)
_ACCURACY_CASES = {
    "iconqa": ("IconQA", "IconQA/val.json", "IconQA"), "tabmwp": ("TabMWP", "TabMWP/test.json", "TabMWP"),
    "vqav2": ("VQAv2", "VQAv2/val.json", "VQAv2"), "aokvqa": ("AOKVQA", "AOKVQA/val.json", "AOKVQA"),
    "ocrvqa": ("OCRVQA", "OCRVQA/test.json", "OCRVQA"), "imagenet": ("ImageNet", "ImageNet/test.json", "ImageNet"),
    "grounding": ("Grounding", "Grounding/test.json", "Grounding"),
}
CASES = {case: (_args(task, "--question-file", f"instructions/{qf}", answers), ACCURACY)
         for case, (task, qf, answers) in _ACCURACY_CASES.items()}
CASES["scienceqa"] = (_args("ScienceQA", "--base-dir", "datasets/ScienceQA/", "ScienceQA"),
                      {"accuracy": "Accuracy_percent_str", "img_accuracy": "IMG_Accuracy_percent_str"})
CAPTION_METRICS = {k: f"{k}_str" for k in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")}
CAPTION_METRICS["Average"] = "Average_percent_str"
# case folder: (task, COCO ground truth under instructions/, answers folder under results/)
_CAPTION_CASES = {
    "caption_screen2words": ("Screen2Words", "Screen2words/test_coco_type.json", "Screen2words"),
    "flickr30k": ("Flickr30k", "flickr30k-caption/val_coco_type.json", "flickr30k"),
    "vizwiz_caption": ("VizWiz-caption", "VizWiz-caption/val_coco_type.json", "VizWiz"),
}
CAPTION_CASES = {case: (_args(task, "--gt-file", f"instructions/{gt}", answers), CAPTION_METRICS)
                 for case, (task, gt, answers) in _CAPTION_CASES.items()}


def run_case(case: str, argv: list[str], tmp_path: Path, monkeypatch, capsys):
    """Run the CLI from the fixture folder; return (stdout, result dict, side-file folder, expected dir)."""
    folder = OFFICIAL / case
    monkeypatch.chdir(folder)
    out_dir = tmp_path / "out"
    rc = main(argv + ["--protocol", "official", "--result-file", str(tmp_path / "result.json"),
                      "--output-dir", str(out_dir)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    result = json.loads((tmp_path / "result.json").read_text())
    return captured.out, result, out_dir, folder / "expected"


def check_numbers(result: dict, expected_dir: Path, keys: dict[str, str]) -> None:
    parsed = json.loads((expected_dir / "expected.json").read_text())["parsed_stdout"]
    for metric, key in keys.items():
        assert f"{result['metrics'][metric]:.2f}" == parsed[key], metric


# Not produced: none (VQAv2's answers_upload.json, the EvalAI upload, is compared too).
NOT_PRODUCED: set[str] = set()


def check_side_files(out_dir: Path, expected_dir: Path) -> None:
    written = set(json.loads((expected_dir / "expected.json").read_text())["files_written"]) - NOT_PRODUCED
    assert {p.name for p in out_dir.iterdir()} == set(written)
    for name in written:
        assert (out_dir / name).read_bytes() == (expected_dir / name).read_bytes(), name


@needs_fixtures
@pytest.mark.parametrize("case", sorted(CASES))
def test_official_reproduces_fixture(case, tmp_path, monkeypatch, capsys):
    argv, keys = CASES[case]
    stdout, result, out_dir, expected = run_case(case, argv, tmp_path, monkeypatch, capsys)
    assert stdout == (expected / "stdout.txt").read_text()
    check_numbers(result, expected, keys)
    check_side_files(out_dir, expected)
    assert result["protocol"] == "official" and result["quirks"]
    assert result["scorer_version"] == "1"


@needs_fixtures
@needs_java
@pytest.mark.parametrize("case", sorted(CAPTION_CASES))
def test_official_caption_reproduces_fixture(case, tmp_path, monkeypatch, capsys):
    argv, keys = CAPTION_CASES[case]
    stdout, result, out_dir, expected = run_case(case, argv, tmp_path, monkeypatch, capsys)
    # pycocotools' loading chatter (with timings) precedes these lines in the original's stdout
    tail = "".join((expected / "stdout.txt").read_text().splitlines(keepends=True)[-10:])
    assert stdout == tail
    check_numbers(result, expected, keys)
    check_side_files(out_dir, expected)
    assert result["headline"] == "CIDEr"
    assert "SPICE" not in result["metrics"]


@needs_fixtures
def test_result_schema(tmp_path, monkeypatch, capsys):
    argv, _ = CASES["grounding"]
    _, result, _, _ = run_case("grounding", argv, tmp_path, monkeypatch, capsys)
    assert list(result) == ["task", "protocol", "metrics", "headline", "counts", "unparsed_share",
                            "quirks", "notes", "settings", "scorer_version"]
    assert result["task"] == "Grounding" and result["headline"] == "accuracy"
    assert result["counts"] == {"questions": 20, "answers": 20, "scored": 20, "unparsed": 5, "missing": 0,
                                "duplicates": 0, "extra": 0, "malformed_lines": 0, "correct": 11}
    assert result["unparsed_share"] == pytest.approx(5 / 20)
    assert result["settings"]["question_file"] == "instructions/Grounding/test.json"
