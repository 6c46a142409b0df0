"""The `official` protocol reproduces the original scorers on the shared fixtures, bit for bit.

Ground truth: ``shared/fixtures/official_scores/<case>/expected`` (stdout, the files the original
wrote, and ``expected.json`` with the printed numbers as strings). Each case runs the CLI in
process from the fixture folder, as the original commands did, writing into ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from llava.eval.scorers.__main__ import main


def _fixtures_root() -> Path | None:
    env = os.environ.get("MMMERGEBENCH_FIXTURES")
    repo = Path(__file__).resolve().parents[1]
    for cand in ([Path(env)] if env else []) + [repo / "shared" / "fixtures" / "official_scores",
                                                repo.parent / "shared" / "fixtures" / "official_scores"]:
        if cand.is_dir():
            return cand
    return None


FIXTURES = _fixtures_root()
needs_fixtures = pytest.mark.skipif(FIXTURES is None, reason="shared/fixtures/official_scores not found "
                                    "(set MMMERGEBENCH_FIXTURES)")
needs_java = pytest.mark.skipif(shutil.which("java") is None,
                                reason="Java is needed for pycocoevalcap's PTB tokenizer and METEOR")

# case folder -> (CLI arguments, metric key -> parsed_stdout key)
ACCURACY = {"accuracy": "Accuracy_percent_str"}
CASES = {
    "iconqa": (["--task", "IconQA", "--question-file", "instructions/IconQA/val.json",
                "--answers-file", "results/IconQA/merge.jsonl"], ACCURACY),
    "tabmwp": (["--task", "TabMWP", "--question-file", "instructions/TabMWP/test.json",
                "--answers-file", "results/TabMWP/merge.jsonl"], ACCURACY),
    "vqav2": (["--task", "VQAv2", "--question-file", "instructions/VQAv2/val.json",
               "--answers-file", "results/VQAv2/merge.jsonl"], ACCURACY),
    "aokvqa": (["--task", "AOKVQA", "--question-file", "instructions/AOKVQA/val.json",
                "--answers-file", "results/AOKVQA/merge.jsonl"], ACCURACY),
    "ocrvqa": (["--task", "OCRVQA", "--question-file", "instructions/OCRVQA/test.json",
                "--answers-file", "results/OCRVQA/merge.jsonl"], ACCURACY),
    "imagenet": (["--task", "ImageNet", "--question-file", "instructions/ImageNet/test.json",
                  "--answers-file", "results/ImageNet/merge.jsonl"], ACCURACY),
    "grounding": (["--task", "Grounding", "--question-file", "instructions/Grounding/test.json",
                   "--answers-file", "results/Grounding/merge.jsonl"], ACCURACY),
    "scienceqa": (["--task", "ScienceQA", "--base-dir", "datasets/ScienceQA/",
                   "--answers-file", "results/ScienceQA/merge.jsonl"],
                  {"accuracy": "Accuracy_percent_str", "img_accuracy": "IMG_Accuracy_percent_str"}),
}
CAPTION_METRICS = {k: f"{k}_str" for k in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")}
CAPTION_METRICS["Average"] = "Average_percent_str"
CAPTION_CASES = {
    "caption_screen2words": (["--task", "Screen2Words", "--gt-file", "instructions/Screen2words/test_coco_type.json",
                              "--answers-file", "results/Screen2words/merge.jsonl"], CAPTION_METRICS),
    "flickr30k": (["--task", "Flickr30k", "--gt-file", "instructions/flickr30k-caption/val_coco_type.json",
                   "--answers-file", "results/flickr30k/merge.jsonl"], CAPTION_METRICS),
    "vizwiz_caption": (["--task", "VizWiz-caption", "--gt-file", "instructions/VizWiz-caption/val_coco_type.json",
                        "--answers-file", "results/VizWiz/merge.jsonl"], CAPTION_METRICS),
}


def run_case(case: str, argv: list[str], tmp_path: Path, monkeypatch, capsys):
    """Run the CLI from the fixture folder; return (stdout, result dict, side-file folder, expected dir)."""
    folder = FIXTURES / case
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
