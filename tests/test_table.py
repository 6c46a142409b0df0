"""robustmerge.table: a results table from a fixture results/ tree built in tmp_path."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from robustmerge import table
from robustmerge.paper_numbers import paper_method

LAYOUT = table.get_layout("paper")     # built from the task specs (llava/eval/tasks/)
PAPER = LAYOUT.paper


def write_result(root: Path, run: str, task: str, value: float, protocol: str = "official",
                 missing: int = 0) -> None:
    folder = root / run / task
    folder.mkdir(parents=True, exist_ok=True)
    result = {"task": task, "protocol": protocol, "metrics": {"score": value, "other": -1.0},
              "headline": "score",
              "counts": {"questions": 10, "answers": 10 - missing, "scored": 10 - missing, "unparsed": 0,
                         "missing": missing, "duplicates": 0, "extra": 0},
              "unparsed_share": 0.0, "quirks": [], "notes": [], "settings": {}, "scorer_version": "1"}
    (folder / "result.json").write_text(json.dumps(result), encoding="utf-8")


# seen values 70..77, unseen 40..43, general
FULL = {**{t: 70.0 + i for i, t in enumerate(LAYOUT.seen)},
        **{t: 40.0 + i for i, t in enumerate(LAYOUT.unseen)},
        "POPE": 87.26, "MME": 1500.04, "MMBench": 68.0}


@pytest.fixture
def results(tmp_path) -> Path:
    root = tmp_path / "results"
    for task, v in FULL.items():
        write_result(root, "robustmerge", task, v, protocol="strict" if task == "POPE" else "official")
    for task, v in FULL.items():
        if task != "REC":                                           # one seen cell missing
            write_result(root, "ties", task, v - 1.0, missing=3 if task == "MME" else 0)
    for task in LAYOUT.seen:
        write_result(root, "zero-shot", task, 50.0)
    (root / "zero-shot" / "notes").mkdir()                          # not a task folder: ignored
    (root / "Multi-task").mkdir(parents=True)                        # a run without any result
    return root


def rows_by_label(rows):
    return {r.label: r for r in rows}


def test_default_order_averages_and_missing_cells(results):
    rows = table.make_table(results)
    assert [r.label for r in rows] == ["zero-shot", "Multi-task", "robustmerge", "ties"]
    by = rows_by_label(rows)
    rm = by["robustmerge"].cells
    assert rm[table.SEEN_AVG].value == sum(70.0 + i for i in range(8)) / 8 == 73.5
    assert rm[table.UNSEEN_AVG].value == (40.0 + 41.0 + 42.0 + 43.0) / 4 == 41.5
    assert rm["POPE"].protocol == "strict" and rm[table.SEEN_AVG].protocol == "official"
    ties = by["ties"].cells
    assert ties["REC"].value is None and ties[table.SEEN_AVG].value is None      # never an average of 7
    assert ties[table.SEEN_AVG].why == "missing REC"
    assert ties[table.UNSEEN_AVG].value == 40.5
    zs = by["zero-shot"].cells
    assert zs[table.SEEN_AVG].value == 50.0 and zs[table.UNSEEN_AVG].value is None
    assert all(c.value is None for c in by["Multi-task"].cells.values())


def test_markdown_and_csv(results, tmp_path, capsys):
    md_path, csv_path = tmp_path / "t.md", tmp_path / "t.csv"
    rc = table.main(["--results", str(results), "--runs", "robustmerge,ties", "--out-md", str(md_path),
                     "--out-csv", str(csv_path)])
    assert rc == 0
    md = capsys.readouterr().out
    assert md == md_path.read_text()
    lines = md.splitlines()
    assert lines[2] == "| run | " + " | ".join(LAYOUT.mergebench_columns) + " |"
    assert lines[4] == ("| robustmerge | 70.00 | 71.00 | 72.00 | 73.00 | 74.00 | 75.00 | 76.00 | 77.00 | 73.50 "
                        "| 40.00 | 41.00 | 42.00 | 43.00 | 41.50 |")
    assert lines[5] == ("| ties | 69.00 | 70.00 | 71.00 | – | 73.00 | 74.00 | 75.00 | 76.00 | – "
                        "| 39.00 | 40.00 | 41.00 | 42.00 | 40.50 |")
    assert "| robustmerge | 87.3* | 1500.0 | 68.0 |" in lines
    assert "| ties | 86.3 | 1499.0 | 67.0 |" in lines
    assert "- – ties / REC: no result.json" in lines
    assert "- – ties / seen avg: missing REC" in lines
    assert "- ties / MME: 3 of 10 questions unanswered" in lines
    assert "Protocols: robustmerge: mixed (strict: POPE); ties: official" in lines
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert [r["run"] for r in rows] == ["robustmerge", "ties"]
    assert float(rows[0][table.SEEN_AVG]) == 73.5 and rows[1][table.SEEN_AVG] == "" and rows[1]["REC"] == ""
    assert float(rows[0]["MME"]) == 1500.04 and rows[1]["protocol"] == "official"
    assert rows[0]["protocol"] == "mixed (strict: POPE)" and rows[0]["kind"] == "run"


def test_reference_rows_show_paper_and_difference(results):
    rows = table.make_table(results, ["robustmerge", "ties", "zero-shot"], reference="paper")
    assert [(r.label, r.kind) for r in rows] == [
        ("robustmerge", "run"), ("paper: RobustMerge", "paper"), ("Δ vs paper", "delta"),
        ("ties", "run"), ("paper: TIES", "paper"), ("Δ vs paper", "delta"),
        ("zero-shot", "run"), ("paper: Zero-shot", "paper"), ("Δ vs paper", "delta")]
    delta = rows[2].cells
    assert delta["ScienceQA"].value == 70.0 - 73.43
    assert delta[table.SEEN_AVG].value == 73.5 - 57.33
    assert delta["MME"].value == 1500.04 - 1494.9
    assert rows[5].cells[table.SEEN_AVG].value is None                 # ties' own average is missing
    assert rows[1].cells["POPE"].value == 87.2
    assert table.format_cell(rows[2], "MME", LAYOUT) == "+5.1"
    assert table.format_cell(rows[2], "ScienceQA", LAYOUT) == "-3.43"
    assert table.format_cell(rows[8], "AOKVQA", LAYOUT) == ""                   # zero-shot: unseen missing
    lines = table.render_csv(rows).splitlines()
    assert lines[3].startswith("robustmerge,delta,Δ vs paper,-3.43,5.46,4.8,28.2,")
    assert lines[2].startswith("robustmerge,paper,paper: RobustMerge,73.43,")


def test_paper_numbers_module():
    assert PAPER["RobustMerge"]["seen avg"] == 57.33 and PAPER["Zero-shot"]["MMBench"] == 66.1
    assert "unseen avg" not in PAPER["Individual"] and "POPE" not in PAPER["Individual"]
    assert paper_method("task_arithmetic") == "Task Arithmetic" and paper_method("my-run") is None
    # The paper's averages match the mean of its printed cells to rounding (they come from
    # unrounded numbers) -- except RobustMerge's seen average: 57.33 printed, 57.41 computed.
    for method, ref in PAPER.items():
        for avg, tasks in LAYOUT.averages.items():
            if avg in ref:
                mean = sum(ref[t] for t in tasks) / len(tasks)
                off = abs(mean - ref[avg])
                assert (off > 0.07) == ((method, avg) == ("RobustMerge", table.SEEN_AVG)), (method, avg)


def test_bad_results_exit_2(results, capsys):
    bad = results / "ties" / "MME" / "result.json"
    bad.write_text('{"task": "MME", ', encoding="utf-8")
    assert table.main(["--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err
    write_result(results, "ties", "MME", 1.0)
    (results / "ties" / "POPE" / "result.json").write_text(json.dumps(
        {"task": "MME", "protocol": "official", "metrics": {"x": 1.0}, "headline": "x"}), encoding="utf-8")
    assert table.main(["--results", str(results)]) == 2
    assert "POPE" in capsys.readouterr().err
    assert table.main(["--results", str(results / "nowhere")]) == 2
