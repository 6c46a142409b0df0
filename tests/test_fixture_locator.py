"""The one fixture locator (tests/conftest.py): a missing fixture skips on a developer machine
and fails the run, with one clear line, under ``CI=true``.

Each case runs pytest in a subprocess on a two-test file in tmp_path, with this suite's
conftest.py loaded as a plugin: one test marked ``@needs_fixture("case")``, one that needs none.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROBE = '''
from conftest import needs_fixture


@needs_fixture("case")
def test_reads_a_fixture():
    pass


def test_needs_none():
    pass
'''


def _pytest(tmp_path: Path, fixtures: Path, ci: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["LLAVA_FIXTURES"] = str(fixtures)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), env.get("PYTHONPATH", "")])
    if ci is not None:
        env["CI"] = ci
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p", "conftest", "--rootdir", str(tmp_path),
           "-c", os.devnull, str(tmp_path / "test_probe.py")]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_ci_without_fixtures_fails_with_one_line(tmp_path):
    missing = tmp_path / "no-such-fixtures"
    run = _pytest(tmp_path, missing, "true")
    assert run.returncode == 4  # pytest's usage error: the session stops before any test runs
    assert run.stdout == ""
    assert run.stderr.strip().splitlines() == [f"ERROR: CI=true: fixture not found: {missing} (put the shared fixtures "
                                       f"at {REPO.parent / 'shared' / 'fixtures'} or set $LLAVA_FIXTURES)"]


def test_ci_with_a_fixture_missing_fails_that_test(tmp_path):
    (tmp_path / "fixtures").mkdir()
    run = _pytest(tmp_path, tmp_path / "fixtures", "true")
    assert run.returncode == 1
    assert f"CI=true: fixture not found: {tmp_path / 'fixtures' / 'case'}" in run.stdout
    assert "1 passed, 1 error" in run.stdout  # the marked test fails in its setup


def test_without_ci_a_missing_fixture_skips(tmp_path):
    for ci in (None, "false"):
        run = _pytest(tmp_path, tmp_path / "no-such-fixtures", ci)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "1 passed, 1 skipped" in run.stdout
        assert f"fixture not found: {tmp_path / 'no-such-fixtures' / 'case'}" in run.stdout


def test_a_present_fixture_runs(tmp_path):
    (tmp_path / "fixtures" / "case").mkdir(parents=True)
    run = _pytest(tmp_path, tmp_path / "fixtures", "true")
    assert run.returncode == 0 and "2 passed" in run.stdout, run.stdout + run.stderr
