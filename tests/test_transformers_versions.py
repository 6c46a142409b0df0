"""Other transformers versions (slow: each builds a throw-away venv from the package index once).

- The hf-layout export loads in transformers 4.57 (what vLLM/SGLang releases build on) and at
  the project's floor 5.17 with no missing or unexpected keys, and gives the project runner's
  exact greedy tokens (`bench.hf_compat`).
- The project itself works at the declared floor (`transformers>=5.17`) on CPU without
  torchvision: the model and export tests (which pin pixels, prompt ids, logits and tokens)
  pass inside a transformers 5.17 venv.

Venvs live under the system temp folder (`robustmerge-venvs/`) and are reused by later runs.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from bench.hf_compat import make_venv

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
VENVS = Path(tempfile.gettempdir()) / "robustmerge-venvs"
FLOOR_EXTRA = ("peft>=0.17,<0.30", "accelerate>=1.0", "tqdm", "numpy", "pyyaml", "pytest")


def test_hf_export_gives_runner_tokens_in_457_and_517(capsys):
    from bench.hf_compat import main

    argv = ["--venv", str(VENVS / "tf457"), "--transformers", "4.57.*", "--venv", str(VENVS / "tf517"),
            "--transformers", "5.17.*"]
    assert main(argv) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "transformers   4.57" in out and "transformers   5.17" in out


def test_project_tests_pass_at_transformers_floor():
    python = make_venv(VENVS / "tf517", "5.17.*", FLOOR_EXTRA)
    code = ("import importlib.util, transformers; "
            "print(transformers.__version__, importlib.util.find_spec('torchvision') is None)")
    check = subprocess.run([str(python), "-c", code],
                           capture_output=True, text=True, check=True)
    assert check.stdout.split() == [check.stdout.split()[0], "True"] and check.stdout.startswith("5.17.")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([str(python), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "tests/test_llava_model.py",
                           "tests/test_llava_export.py", "tests/test_export_stream.py"],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout.splitlines()[-1] and "failed" not in proc.stdout.splitlines()[-1]
