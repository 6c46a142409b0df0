"""Shared test setup: the one fixture locator, and one torch thread for tiny models.

Ground-truth fixtures live in ``../shared/fixtures`` beside the checkout, or wherever
``$LLAVA_FIXTURES`` points (the one variable; see README "Layout"). A test that needs one says so
with ``@needs_fixture("official_merge", "case_a")`` (or ``pytestmark = needs_fixture(...)``). When
the fixture is absent the test is skipped on a developer machine, and FAILS under ``CI=true``:
a CI run that silently skipped the parity tests would prove nothing.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

FIXTURES_ENV = "LLAVA_FIXTURES"
REPO = Path(__file__).resolve().parents[1]


def fixtures_root() -> Path:
    """``$LLAVA_FIXTURES``, else ``../shared/fixtures`` next to the checkout."""
    env = os.environ.get(FIXTURES_ENV)
    return Path(env) if env else REPO.parent / "shared" / "fixtures"


FIXTURES = fixtures_root()


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def needs_fixture(*parts: str) -> pytest.MarkDecorator:
    """Mark a test (or, as ``pytestmark``, a module) as needing ``FIXTURES/<parts...>``."""
    return pytest.mark.needs_fixture(FIXTURES.joinpath(*parts))


def missing_fixture_message(path: Path) -> str:
    return (f"fixture not found: {path} (put the shared fixtures at {REPO.parent / 'shared' / 'fixtures'} "
            f"or set ${FIXTURES_ENV})")


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_fixture(path): needs a ground-truth fixture "
                                       "(skipped when absent; fails under CI=true)")


def pytest_sessionstart(session):
    # a UsageError is reported as exactly one line, "ERROR: <message>" on stderr (exit status 4);
    # pytest.exit would print the message twice, once wrapped in "! _pytest.outcomes.Exit: ... !"
    if in_ci() and not FIXTURES.is_dir():
        raise pytest.UsageError("CI=true: " + missing_fixture_message(FIXTURES))


def pytest_runtest_setup(item):
    for mark in item.iter_markers("needs_fixture"):
        path = Path(mark.args[0])
        if not path.exists():
            if in_ci():
                pytest.fail("CI=true: " + missing_fixture_message(path), pytrace=False)
            pytest.skip(missing_fixture_message(path))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest, and reproducibly, on one torch thread on shared 2-core
    machines (two threads spinning on busy cores made generation ~25x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def llava_ref():
    """The original code's reference outputs on ``fixtures/llava_tiny``: (reference.json, its tensors).
    Tests using it are marked ``@needs_fixture("llava_tiny")``."""
    folder = FIXTURES / "llava_tiny" / "reference"
    return json.loads((folder / "reference.json").read_text()), load_file(str(folder / "reference.safetensors"))
