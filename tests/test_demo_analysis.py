"""robustmerge.demo.analysis: the missing-demo-run error, and the demo's sweeps (with a stub
evaluate) on a tiny synthetic adapter set. The real demo is not run here."""
import csv
import subprocess
import sys

import torch

from robustmerge import load_adapter_set
from robustmerge.analysis import write_sweeps
from robustmerge.demo.analysis import PRUNE_KEEP, demo_sweeps, main
from robustmerge.synthetic import LlamaShape, write_task_adapters

SHAPE = LlamaShape(layers=2, hidden=16, intermediate=24, mm_hidden=8)
DIR_COLS = ["dir_top_cos", "dir_top_ratio", "dir_rest_cos", "dir_rest_ratio"]


def test_missing_settings_exit_2(tmp_path, capsys):
    assert main(["--demo", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "settings.json" in err and "run `python -m robustmerge demo` first" in err
    assert not (tmp_path / "out").exists()


def test_missing_settings_command_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "robustmerge.demo.analysis", "--demo", str(tmp_path), "-q"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert f"{tmp_path / 'settings.json'}: not found" in proc.stderr
    assert "run `python -m robustmerge demo` first" in proc.stderr


def test_demo_sweeps_with_stub_evaluate(tmp_path):
    torch.set_num_threads(1)
    paths = write_task_adapters(tmp_path / "ad", 4, SHAPE, r=4, alpha=8, names=["A", "B", "C", "D"])
    adapters = load_adapter_set(paths)
    seen = []

    def stub(result):  # what the real scorer sees: the merged tasks and the merge's parameters
        tasks = [t.name for t in result.plan.adapters.tasks]
        seen.append((tasks, dict(result.plan.params)))
        return {"val_mean": float(len(tasks)), "val_rel": 100.0 * result.plan.params["lam"]}

    sweeps = demo_sweeps(adapters, {"lam": 0.5, "keep": 0.5}, stub, lambdas=(0.25, 1.0))
    assert list(sweeps) == ["prune", "lambda", "lambda_task_arithmetic", "tasks"]
    assert len(seen) == len(PRUNE_KEEP) + 2 + 2 + 3
    written = write_sweeps(sweeps, tmp_path / "sweeps", figures=False, inputs=paths)
    assert {"prune.csv", "lambda.csv", "lambda_task_arithmetic.csv", "tasks.csv"} <= set(written)

    def read(name):
        with open(tmp_path / "sweeps" / f"{name}.csv", newline="") as f:
            return list(csv.DictReader(f))

    prune = read("prune")
    assert list(prune[0]) == ["method", "preset", "keep", "pruned_share", *DIR_COLS, "val_mean", "val_rel"]
    assert [float(r["keep"]) for r in prune] == list(PRUNE_KEEP)
    assert all(r["preset"] == "official" and float(r["val_rel"]) == 50.0 for r in prune)  # λ fixed at the chosen 0.5
    lam = read("lambda")
    assert list(lam[0]) == ["method", "preset", "lam", *DIR_COLS, "val_mean", "val_rel"]
    assert [float(r["lam"]) for r in lam] == [0.25, 1.0]
    ta = read("lambda_task_arithmetic")
    assert {r["method"] for r in ta} == {"task_arithmetic"} and list(ta[0])[2] == "lam"
    tasks = read("tasks")
    assert list(tasks[0]) == ["method", "preset", "n_tasks", "tasks", *DIR_COLS, "val_mean", "val_rel"]
    assert [r["tasks"] for r in tasks] == ["A+B", "A+B+C", "A+B+C+D"]
    assert [float(r["val_mean"]) for r in tasks] == [2.0, 3.0, 4.0]  # score over the merged tasks only
    assert all(p["keep"] == 0.5 and p["lam"] == 0.5 for t, p in seen[-3:])
