"""One user-error hierarchy and one CLI wrapper (robustmerge.errors) for every command."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from robustmerge.errors import USER_ERROR_EXIT, MergeInputError, UserError, cli_main

REPO = Path(__file__).resolve().parents[1]


def test_user_error_is_one_line_on_stderr_and_exit_2(capsys):
    def run():
        raise MergeInputError("a/b.json: broken\nfix it")

    assert cli_main(run, prog="robustmerge") == USER_ERROR_EXIT == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "robustmerge: error: a/b.json: broken fix it\n"
    assert cli_main(run) == 2 and capsys.readouterr().err == "error: a/b.json: broken fix it\n"


def test_return_values_and_bugs():
    assert cli_main(lambda: None) == 0 and cli_main(lambda: 3) == 3 and cli_main(lambda: {"x": 1}) == 0
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        cli_main(lambda: 1 / 0)


def test_every_user_error_type_derives_from_user_error():
    from llava.eval.runner import RunnerError
    from llava.eval.scorers.common import ScoreError
    from llava.model.errors import LlavaLoadError
    from llava.train.data import TrainDataError
    from llava.train.train import TrainSetupError
    from robustmerge.table import TableError

    for cls in (RunnerError, ScoreError, LlavaLoadError, TrainDataError, TrainSetupError, TableError,
                MergeInputError):
        assert issubclass(cls, UserError), cls


def _mains():
    for path in sorted([*REPO.glob("llava/**/*.py"), *REPO.glob("robustmerge/**/*.py"), *REPO.glob("clipvit/**/*.py")]):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == "main":
                yield path.relative_to(REPO), node


def _walk_own(fn):
    """The nodes of ``fn`` outside the functions it defines."""
    todo = list(fn.body)
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))


def test_every_main_goes_through_cli_main():
    """A new command cannot forget the rule: each ``main()`` returns ``cli_main(...)``
    (or delegates to another module's ``main``) and catches no exception itself."""
    mains = list(_mains())
    assert len(mains) >= 10
    for path, fn in mains:
        calls = {n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, "attr", "")
                 for n in ast.walk(fn) if isinstance(n, ast.Call)}
        assert "cli_main" in calls or "main" in calls, f"{path}: main() does not use cli_main"
        handlers = [n for n in _walk_own(fn) if isinstance(n, ast.ExceptHandler)]
        assert not handlers, f"{path}: main() catches exceptions itself; raise a UserError instead"
