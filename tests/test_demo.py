"""`robustmerge demo --quick` end to end (about 1.5 min on 2 CPU cores).

Every stage runs for real in tmp_path: generated data, tiny base pre-training, eight
`llava.train` adapters, every merge method over the validation grid, the test evaluations,
the table. Checked: the table's layout and row order, a result.json per run and task, the
hyper-parameter record (same grid for every method, choice within it), the timing record,
that the adapters learned something (individual > zero-shot on the seen tasks' average: in
--quick mode the adapters train for 50 steps, enough to beat the base by a wide margin on
average but not on every task, e.g. grounding may stay at 0 for both), and that a second run
with the same seed reuses the cache and prints the same table.
"""

from __future__ import annotations

import csv
import json

import pytest

from robustmerge import cli
from robustmerge.demo.tasks import SEEN as DEMO_SEEN, UNSEEN as DEMO_UNSEEN
from robustmerge.demo.pipeline import MERGES, DemoSettings, run_demo
from robustmerge.table import SEEN_AVG, UNSEEN_AVG, get_layout

RUNS = ["zero-shot", "individual", "multi-task"] + [run for run, _, _ in MERGES]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    report = run_demo(root / "results", seed=0, quick=True, cache_dir=root / "cache", progress=False)
    return root, report


def _table_rows(markdown: str) -> dict[str, list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["run", *DEMO_SEEN, SEEN_AVG, *DEMO_UNSEEN, UNSEEN_AVG]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[1:])}


def _number(cell: str) -> float:
    return float(cell.rstrip("*"))


def test_table_layout_rows_and_files(demo):
    root, report = demo
    out = root / "results"
    markdown = (out / "table.md").read_text()
    assert markdown == report.table_markdown
    rows = _table_rows(markdown)
    assert list(rows) == RUNS == report.runs
    n_seen = len(DEMO_SEEN)
    for run, cells in rows.items():
        assert len(cells) == n_seen + len(DEMO_UNSEEN) + 2
        seen = cells[:n_seen + 1]
        assert all(c != "–" for c in seen), run
        if run == "individual":  # no adapter exists for an unseen task
            assert all(c == "–" for c in cells[n_seen + 1:])
        else:
            assert all(c != "–" for c in cells), run
        values = [_number(c) for c in seen[:-1]]
        assert abs(sum(values) / n_seen - _number(seen[-1])) < 0.02  # the printed average
    with open(out / "table.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["run"] for r in table] == RUNS
    assert list(table[0])[3:-1] == list(get_layout("demo").columns)
    for run in RUNS:
        for task in (DEMO_SEEN if run == "individual" else DEMO_SEEN + DEMO_UNSEEN):
            result = json.loads((out / run / task / "result.json").read_text())
            assert result["task"] == task and result["protocol"] == "strict"
            assert isinstance(result["metrics"][result["headline"]], float)
            assert (out / run / task / "answers.jsonl").is_file()
            assert result["counts"]["questions"] == DemoSettings.quick().data.n_test == result["counts"]["answers"]


def test_individual_beats_zero_shot_on_seen_tasks(demo):
    rows = _table_rows(demo[1].table_markdown)
    zero = [_number(c) for c in rows["zero-shot"][:len(DEMO_SEEN)]]
    individual = [_number(c) for c in rows["individual"][:len(DEMO_SEEN)]]
    assert sum(individual) / len(individual) > sum(zero) / len(zero) + 15
    assert sum(i > z for i, z in zip(individual, zero)) >= len(DEMO_SEEN) // 2 + 1


def test_hyperparameters_chosen_on_the_same_grid(demo):
    root, report = demo
    record = json.loads((root / "results" / "chosen_hyperparameters.json").read_text())
    assert record == report.selection
    settings = DemoSettings.quick()
    methods = record["methods"]
    assert list(methods) == [run for run, _, _ in MERGES]
    assert {(m["method"], m["preset"]) for m in methods.values()} == {(m, p) for _, m, p in MERGES}
    for run, entry in methods.items():
        lams = sorted({g["params"]["lam"] for g in entry["grid"]})
        assert lams == sorted(settings.lambdas), run
        knobs = 1 if entry["method"] == "task_arithmetic" else len(settings.kept)
        assert len(entry["grid"]) == len(settings.lambdas) * knobs
        assert entry["chosen"] in [g["params"] for g in entry["grid"]]
        assert entry["validation_score"] == max(g["validation_score"] for g in entry["grid"])
        assert all(set(g["per_task"]) == set(DEMO_SEEN) for g in entry["grid"])  # validation: seen tasks only
    assert set(record["individual_validation"]) == set(DEMO_SEEN)
    timings = json.loads((root / "results" / "timings.json").read_text())
    assert timings["total_seconds"] > 0 and {"data", "base", "adapters", "test"} <= set(timings["grouped"])


def test_second_run_reuses_the_cache_and_gives_the_same_table(demo, capsys):
    root, report = demo
    rc = cli.main(["demo", "--quick", "--seed", "0", "--out", str(root / "again"), "--cache", str(root / "cache"),
                   "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    again = (root / "again" / "table.md").read_text()
    assert _table_rows(again) == _table_rows(report.table_markdown)
    assert _table_rows(again)["zero-shot"] and report.table_markdown.split("\n- ")[0].split("### ")[1][:40] in printed
    timings = json.loads((root / "again" / "timings.json").read_text())
    assert timings["cache"]["built"] == [] and len(timings["cache"]["reused"]) == len(report.timings["cache"]["built"])
    assert "robustmerge-official" in printed and "Chosen on the validation splits" in printed


def test_table_demo_layout_on_a_fixture_tree(tmp_path, capsys):
    """`robustmerge.table --layout demo` without running the demo; the paper layout stays the default."""
    from robustmerge import table

    for run, value in (("zero-shot", 10.0), ("ties", 50.0)):
        for i, task in enumerate(DEMO_SEEN + DEMO_UNSEEN):
            folder = tmp_path / run / task
            folder.mkdir(parents=True)
            result = {"task": task, "protocol": "strict", "metrics": {"accuracy": value + i}, "headline": "accuracy",
                      "counts": {"questions": 4, "answers": 4, "scored": 4, "unparsed": 0, "missing": 0,
                                 "duplicates": 0, "extra": 0}}
            (folder / "result.json").write_text(json.dumps(result))
    assert table.main(["--results", str(tmp_path), "--layout", "demo", "--out-csv", str(tmp_path / "t.csv")]) == 0
    rows = _table_rows(capsys.readouterr().out)
    n = len(DEMO_SEEN)
    assert list(rows) == ["zero-shot", "ties"]
    assert _number(rows["ties"][n]) == sum(50.0 + i for i in range(n)) / n
    assert _number(rows["ties"][-1]) == sum(50.0 + n + i for i in range(len(DEMO_UNSEEN))) / len(DEMO_UNSEEN)
    assert "POPE" not in (tmp_path / "t.csv").read_text()
    assert table.main(["--results", str(tmp_path)]) == 0  # paper layout: every paper column missing
    assert "### POPE / MME / MMBench" in capsys.readouterr().out
