"""Results tables in the paper's layout, built from ``results/<run>/<task>/result.json``.

Usage::

    python -m robustmerge.table [--results results] [--runs zero-shot,ties,robustmerge]
        [--reference paper] [--layout paper|demo] [--out-md table.md] [--out-csv table.csv]

Layout (two Markdown tables like the paper, one CSV with every column):

- MM-MergeBench: the eight seen tasks, their average, the four unseen tasks, their average;
- POPE / MME / MMBench.

``--layout demo`` uses the built-in demo's miniature benchmark instead (its seven seen and
three unseen tasks, see :mod:`robustmerge.demo`; no POPE / MME / MMBench table). A layout is a
:class:`Layout`: seen tasks, unseen tasks, general tasks, the first table's title, each column's
decimals and accepted result names, and the paper's numbers.

This module knows no task: layouts come from providers, resolved lazily by :func:`get_layout`
(``LAYOUT_PROVIDERS``: "paper" is ``llava.eval.tasks.benchmark:paper_layout``, built from the
task specs in ``llava/eval/tasks/`` and ``$LLAVA_TASKS_PATH``; "demo" is
``robustmerge.demo.tasks:demo_layout``), or registered with :func:`register_layout`. Importing
``robustmerge.table`` imports no ``llava`` module.

Rows are runs (folders of ``--results``), in ``--runs`` order, or by default alphabetical
with ``zero-shot``, ``individual`` and ``multi-task`` first when present. With
``--reference paper`` each run whose name stands for a paper method (see
:mod:`robustmerge.paper_numbers`) is followed by the paper's row and a "Δ vs paper" row.

Each cell is the result's ``metrics[headline]``. Missing results print as "–" with a
footnote, and an average with any missing cell is itself missing (never an average over
fewer tasks). Numbers from the ``strict`` protocol carry "*"; unmarked ones are ``official``.
The CSV has one line per row (``run``, ``kind`` = run / paper / delta, ``label``), numbers
rounded to 6 decimals, empty missing cells and a ``protocol`` column.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from robustmerge.atomic import write_text_atomic
from robustmerge.paper_numbers import normalize_name, paper_method
from robustmerge.errors import UserError, cli_main

logger = logging.getLogger(__name__)

SEEN_AVG, UNSEEN_AVG = "seen avg", "unseen avg"
FIRST_RUNS = ("zero-shot", "individual", "multi-task")
#: layout name -> "module:function" returning a :class:`Layout` (imported on first use)
LAYOUT_PROVIDERS: dict[str, str | Callable[[], "Layout"]] = {
    "paper": "llava.eval.tasks.benchmark:paper_layout",
    "demo": "robustmerge.demo.tasks:demo_layout",
}
MISSING = "–"
STRICT_MARK = "*"


class TableError(UserError):
    """A problem with the results tree a user can fix; the message names the file."""


@dataclass(frozen=True)
class Layout:
    """Which task columns a table has: seen tasks + average, unseen tasks + average (the first
    table, titled ``title``) and general benchmarks (a second table, when there are any)."""

    name: str
    title: str
    seen: tuple[str, ...]
    unseen: tuple[str, ...]
    general: tuple[str, ...] = ()
    decimals: Mapping[str, int] = field(default_factory=dict)            # column -> decimals (default 2)
    result_names: Mapping[str, frozenset] = field(default_factory=dict)  # column -> task names a result may carry
    paper: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # method -> column -> number

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.seen + self.unseen + self.general

    @property
    def mergebench_columns(self) -> tuple[str, ...]:
        return self.seen + (SEEN_AVG,) + self.unseen + (UNSEEN_AVG,)

    @property
    def columns(self) -> tuple[str, ...]:
        return self.mergebench_columns + self.general

    @property
    def averages(self) -> dict[str, tuple[str, ...]]:
        return {SEEN_AVG: self.seen, UNSEEN_AVG: self.unseen}


def register_layout(name: str, provider: str | Callable[[], Layout]) -> None:
    """Add (or replace) a layout provider: a function, or ``"module:function"`` imported lazily."""
    LAYOUT_PROVIDERS[name] = provider


def get_layout(name: str = "paper") -> Layout:
    """The layout called ``name`` ("paper", the default, "demo", or a registered one)."""
    provider = LAYOUT_PROVIDERS.get(name)
    if provider is None:
        raise TableError(f"unknown layout {name!r}; choose one of {', '.join(LAYOUT_PROVIDERS)}")
    if isinstance(provider, str):
        module, _, attr = provider.partition(":")
        try:
            provider = getattr(importlib.import_module(module), attr)
        except ImportError as e:
            raise TableError(f"layout {name!r} comes from {module}, which cannot be imported ({e})") from None
    return provider()


@dataclass
class Cell:
    """One task's number for one run; ``value`` None = missing (``why`` says why)."""

    value: float | None = None
    protocol: str | None = None
    why: str = ""
    note: str = ""      # e.g. unanswered questions in an otherwise valid result


@dataclass
class Row:
    """A table row: ``kind`` is "run", "paper" or "delta"."""

    label: str
    kind: str
    cells: dict[str, Cell] = field(default_factory=dict)
    run: str = ""


# ----------------------------------------------------------------------------- reading


def load_result(path: Path, task: str, layout: Layout | None = None) -> Cell:
    """Read one result.json into a :class:`Cell` (its ``metrics[headline]`` and protocol)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise TableError(f"{path}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise TableError(f"{path}: not valid JSON (line {e.lineno}: {e.msg}); re-run the scorer") from None
    if not isinstance(data, dict) or not {"metrics", "headline", "protocol"} <= data.keys():
        raise TableError(f"{path}: not a result file (needs metrics, headline, protocol)")
    names = (layout.result_names.get(task) if layout else None) or {task}
    if data.get("task", task) not in names:
        raise TableError(f"{path}: holds task {data['task']!r} but sits in the {task!r} folder")
    value = data["metrics"].get(data["headline"])
    if not isinstance(value, (int, float)):
        raise TableError(f"{path}: headline {data['headline']!r} has no numeric value in metrics")
    counts = data.get("counts") or {}
    note = ""
    if counts.get("missing"):
        note = f"{counts['missing']} of {counts.get('questions', '?')} questions unanswered"
    return Cell(float(value), str(data["protocol"]), note=note)


def discover_runs(results_dir: Path) -> list[str]:
    """Run folders of ``results_dir`` (sub-folders, hidden ones excluded)."""
    if not results_dir.is_dir():
        raise TableError(f"{results_dir}: results folder not found; pass --results DIR")
    return [p.name for p in results_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]


def order_runs(runs: Sequence[str], first: Sequence[str] = FIRST_RUNS) -> list[str]:
    """``first`` (matched case- and punctuation-insensitively) in that order, then the rest
    alphabetically (case-insensitive)."""
    rank = {normalize_name(n): i for i, n in enumerate(first)}
    return sorted(runs, key=lambda r: (rank.get(normalize_name(r), len(rank)), r.lower(), r))


def collect(results_dir: Path, runs: Sequence[str], layout: Layout | None = None) -> dict[str, dict[str, Cell]]:
    """``{run: {task: Cell}}`` for every task of the layout; absent files become missing cells."""
    layout = layout or get_layout()
    out = {}
    for run in runs:
        run_dir = results_dir / run
        cells = {}
        for task in layout.tasks:
            path = run_dir / task / "result.json"
            if path.is_file():
                cells[task] = load_result(path, task, layout)
            else:
                cells[task] = Cell(why="no folder for this run" if not run_dir.is_dir() else "no result.json")
        _warn_unknown(run_dir, layout)
        out[run] = cells
    return out


def _warn_unknown(run_dir: Path, layout: Layout) -> None:
    if run_dir.is_dir():
        odd = sorted(p.name for p in run_dir.iterdir() if p.is_dir() and p.name not in layout.tasks)
        if odd:
            logger.warning("%s: ignoring folder(s) %s (not a task of the table)", run_dir, odd)


# ----------------------------------------------------------------------------- rows


def with_averages(cells: dict[str, Cell], layout: Layout | None = None) -> dict[str, Cell]:
    """Add the seen and unseen averages; an average is missing if any of its cells is."""
    layout = layout or get_layout()
    out = dict(cells)
    for avg, tasks in layout.averages.items():
        lacking = [t for t in tasks if cells[t].value is None]
        if lacking:
            out[avg] = Cell(why="missing " + ", ".join(lacking))
        else:
            protocols = {cells[t].protocol for t in tasks}
            out[avg] = Cell(sum(cells[t].value for t in tasks) / len(tasks),
                            protocols.pop() if len(protocols) == 1 else "mixed")
    return out


def reference_rows(run: str, run_cells: dict[str, Cell], layout: Layout | None = None) -> list[Row]:
    """The paper's row for ``run`` and the difference row (run − paper); [] if no match."""
    layout = layout or get_layout()
    method = paper_method(run)
    if method is None or method not in layout.paper:
        return []
    ref = layout.paper[method]
    paper = Row(f"paper: {method}", "paper", {c: Cell(ref.get(c), None) for c in layout.columns}, run)
    delta = Row("Δ vs paper", "delta", run=run)
    for c in layout.columns:
        mine, theirs = run_cells[c].value, ref.get(c)
        both = mine is not None and theirs is not None
        delta.cells[c] = Cell(mine - theirs if both else None, None)
    return [paper, delta]


def build_rows(collected: dict[str, dict[str, Cell]], reference: str | None = None,
               layout: Layout | None = None) -> list[Row]:
    """Run rows (with averages) in the given order, each followed by its reference rows."""
    layout = layout or get_layout()
    if reference == "paper" and not layout.paper:
        raise TableError(f"--reference paper needs the paper layout, not {layout.name!r}")
    rows = []
    for run, cells in collected.items():
        full = with_averages(cells, layout)
        rows.append(Row(run, "run", full, run))
        if reference == "paper":
            rows += reference_rows(run, full, layout)
    return rows


# ----------------------------------------------------------------------------- rendering


def format_cell(row: Row, column: str, layout: Layout | None = None) -> str:
    """Fixed decimals (the layout's: 2, or 1 for POPE/MME/MMBench); signed for Δ rows; "*" for strict."""
    cell = row.cells[column]
    if cell.value is None:
        return MISSING if row.kind == "run" else ""
    d = (layout.decimals if layout else {}).get(column, 2)
    text = f"{cell.value:+.{d}f}" if row.kind == "delta" else f"{cell.value:.{d}f}"
    return text + (STRICT_MARK if cell.protocol in ("strict", "mixed") else "")


def row_protocol(row: Row, layout: Layout | None = None) -> str:
    """"official", "strict", "mixed (strict: A, B)" or "" (reference rows / nothing found)."""
    layout = layout or get_layout()
    found = {t: row.cells[t].protocol for t in layout.tasks if row.cells[t].protocol}
    kinds = set(found.values())
    if len(kinds) <= 1:
        return kinds.pop() if kinds else ""
    strict = [t for t, p in found.items() if p == "strict"]
    return f"mixed (strict: {', '.join(strict)})"


def markdown_table(rows: Sequence[Row], columns: Sequence[str], layout: Layout | None = None) -> str:
    lines = ["| run | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for row in rows:
        lines.append(f"| {row.label} | " + " | ".join(format_cell(row, c, layout) for c in columns) + " |")
    return "\n".join(lines)


def footnotes(rows: Sequence[Row], results_dir: Path, layout: Layout | None = None) -> list[str]:
    """Explanations: protocol markers, every missing cell and every incomplete result."""
    layout = layout or get_layout()
    notes = [f"Unmarked numbers use the official protocol; {STRICT_MARK} = strict protocol (or an "
             "average over a strict number).",
             f"{MISSING} = missing; an average is missing when any of its tasks is."]
    for row in (r for r in rows if r.kind == "run"):
        for c in layout.columns:
            cell = row.cells[c]
            if cell.value is None:
                notes.append(f"{MISSING} {row.label} / {c}: {cell.why}")
            elif cell.note:
                notes.append(f"{row.label} / {c}: {cell.note}")
    if any(r.kind == "paper" for r in rows):
        notes.append("paper rows: numbers printed in the RobustMerge paper (LLaVA-1.5-7B, LoRA rank 16); "
                     "their averages are the paper's")
    notes.append(f"source: {results_dir}/<run>/<task>/result.json (metrics[headline])")
    return notes


def render_markdown(rows: Sequence[Row], results_dir: Path, layout: Layout | None = None) -> str:
    """Two tables (MM-MergeBench; POPE / MME / MMBench), a protocol column and footnotes
    (one table when the layout has no general tasks)."""
    layout = layout or get_layout()
    parts = [f"### {layout.title}", "", markdown_table(rows, layout.mergebench_columns, layout), ""]
    if layout.general:
        parts += ["### " + " / ".join(layout.general), "", markdown_table(rows, layout.general, layout), ""]
    parts += ["Protocols: " + "; ".join(f"{r.label}: {row_protocol(r, layout) or 'none'}"
                                        for r in rows if r.kind == "run"), ""]
    parts += [f"- {n}" for n in footnotes(rows, results_dir, layout)]
    return "\n".join(parts) + "\n"


def render_csv(rows: Sequence[Row], layout: Layout | None = None) -> str:
    """One CSV row per table row: run, kind (run / paper / delta), label, every column
    (rounded to 6 decimals, empty when missing), protocol."""
    layout = layout or get_layout()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["run", "kind", "label", *layout.columns, "protocol"])
    for row in rows:
        values = ["" if row.cells[c].value is None else repr(round(row.cells[c].value, 6)) for c in layout.columns]
        writer.writerow([row.run, row.kind, row.label, *values, row_protocol(row, layout)])
    return buf.getvalue()


# ----------------------------------------------------------------------------- CLI


def make_table(results_dir: str | Path, runs: Sequence[str] | None = None,
               reference: str | None = None, layout: Layout | None = None) -> list[Row]:
    """Collect the results and build the rows (``runs`` None = every run folder, default order)."""
    results_dir = Path(results_dir)
    if runs is None:
        runs = order_runs(discover_runs(results_dir))
        if not runs:
            raise TableError(f"{results_dir}: no run folders found")
    elif not results_dir.is_dir():
        raise TableError(f"{results_dir}: results folder not found; pass --results DIR")
    return build_rows(collect(results_dir, runs, layout), reference, layout)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; exit status 2 with one message on a bad results tree."""
    p = argparse.ArgumentParser(prog="python -m robustmerge.table", description=__doc__.split("\n")[0])
    p.add_argument("--results", default="results", help="results folder (default: results)")
    p.add_argument("--runs", default=None, help="comma-separated runs in row order (default: all)")
    p.add_argument("--reference", choices=("paper",), default=None, help="add the paper's rows and differences")
    p.add_argument("--layout", default="paper",
                   help="task columns: the paper's MM-MergeBench + POPE/MME/MMBench (default), the demo's "
                        "miniature, or a layout registered with register_layout")
    p.add_argument("--out-md", default=None, help="also write the Markdown here")
    p.add_argument("--out-csv", default=None, help="write the CSV here")
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    runs = [r.strip() for r in args.runs.split(",") if r.strip()] if args.runs else None

    def run() -> None:
        layout = get_layout(args.layout)
        rows = make_table(args.results, runs, args.reference, layout)
        md = render_markdown(rows, Path(args.results), layout)
        print(md, end="")
        if args.out_md:
            write_text_atomic(Path(args.out_md), md)
        if args.out_csv:
            write_text_atomic(Path(args.out_csv), render_csv(rows, layout))

    return cli_main(run)


if __name__ == "__main__":
    raise SystemExit(main())
