"""``robustmerge analyze`` and ``robustmerge sweep``: argparse sub-commands.

Wire them into the main parser with ``add_analyze_parser(sub)`` and ``add_sweep_parser(sub)``.
User errors raise :class:`~robustmerge.errors.MergeInputError` (the main CLI prints one line
and exits with status 2).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import parse_key_values
from ..errors import MergeInputError


def parse_merge_spec(spec: str) -> tuple[str, str | None, dict]:
    """``METHOD[:PRESET][,key=value...]`` -> (method, preset, params)."""
    head, *kv = spec.split(",")
    method, _, preset = head.partition(":")
    if not method:
        raise MergeInputError(f"--merge {spec!r}: expected METHOD[:PRESET][,key=value...]")
    return method.strip(), preset.strip() or None, parse_key_values(kv, f"--merge {spec!r}:")


def _unique_labels(paths: list[Path]) -> list[str]:
    labels = [p.name for p in paths]
    return [f"{p.parent.name}/{p.name}" if labels.count(p.name) > 1 else p.name for p in paths]


def cmd_analyze(args: argparse.Namespace) -> int:
    """spectra, pruning spectra and direction robustness of task adapters and their merges

    Singular values of every task update (and after pruning), and how each merged adapter acts on
    each task's singular directions (paper Fig. 3a, 7, 8). Writes analysis.json, PNG figures and README.md.
    """
    from ..adapters import load_adapter_set
    from ..driver import merge
    from .pipeline import analyze, write_analysis
    from .factors import MergedAdapter

    adapters = load_adapter_set(args.adapters)
    adapters.materialize()
    merged_paths = [Path(p) for p in args.merged or []]
    merged = [MergedAdapter.from_folder(p, adapters, label)
              for p, label in zip(merged_paths, _unique_labels(merged_paths))]
    for spec in args.merge or []:
        method, preset, params = parse_merge_spec(spec)
        result = merge(adapters, method, preset, params, device=args.device, seed=args.seed, extras="drop")
        merged.append(MergedAdapter.from_result(result, label=spec))
    labels = [m.label for m in merged]
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dup:
        raise MergeInputError(f"merged adapters given twice: {dup}; pass each once")
    report = analyze(adapters, merged, keep=args.keep, clamp_ratio=args.clamp_ratio, n_groups=args.layer_groups,
                     progress=not args.quiet)
    written = write_analysis(report, args.out, figures=not args.no_figures,
                             inputs=[t.path for t in adapters.tasks] + merged_paths, overwrite=args.overwrite)
    print(f"analysed {len(adapters.tasks)} task adapters, {len(merged)} merge(s), {len(adapters.modules)} modules "
          f"-> {args.out}: {', '.join(written)}")
    for lab, d in report["direction"].items():
        a = d["mean"]["all"]
        print(f"  {lab}: cos largest {a['top_cos']:.3f}, rest {a['rest_cos']:.3f}; "
              f"ratio largest {a['top_ratio']:.3f}, rest {a['rest_ratio']:.3f}")
    return 0


def add_analyze_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``analyze`` on the main parser's sub-parsers; returns the new parser."""

    def own(p: argparse.ArgumentParser) -> None:
        p.add_argument("--merged", nargs="*", metavar="DIR", help="merged adapter folders to analyse")
        p.add_argument("--merge", action="append", metavar="METHOD[:PRESET][,k=v...]",
                       help="also merge in memory and analyse, e.g. robustmerge:official or task_arithmetic,lam=0.5 "
                       "(repeatable)")
        p.add_argument("--out", required=True, metavar="DIR", help="output folder (must not exist or be empty)")
        p.add_argument("--keep", type=float, help="kept share for the pruning spectra (default: the keep of "
                       "robustmerge's official preset, the released value)")
        p.add_argument("--clamp-ratio", type=float, help="S clamp ratio for the pruned + scaled spectra; 1 disables "
                       "(default: the clamp_ratio of robustmerge's official preset, the released value)")
        p.add_argument("--layer-groups", type=int, default=3, help="number of contiguous layer groups (default 3)")

    return _subcommand(subparsers, "analyze", cmd_analyze, own, merge_flag="--merge", files="JSON and Markdown")


def _subcommand(subparsers, name: str, func, own_args, *, merge_flag: str | None,
                files: str) -> argparse.ArgumentParser:
    """A sub-command with the options analyze and sweep share: ``--adapters`` first, then
    ``own_args(parser)``, then --device, --seed (for ``merge_flag``'s merges when given),
    --no-figures (``files`` only), --overwrite and -q. The help line and the description are
    the first line and the rest of ``func``'s docstring."""
    help_line, _, description = func.__doc__.partition("\n")
    p = subparsers.add_parser(name, help=help_line.strip(), description=" ".join(description.split()))
    p.add_argument("--adapters", nargs="+", required=True, metavar="DIR", help="task adapter folders, in merge order")
    own_args(p)
    devices = "cpu | cuda[:N] | auto"
    p.add_argument("--device", default="cpu", help=f"device for {merge_flag} ({devices})" if merge_flag else devices)
    p.add_argument("--seed", type=int, default=0,
                   help=f"seed for randomised rules{f' in {merge_flag}' if merge_flag else ''} (DARE)")
    p.add_argument("--no-figures", action="store_true", help=f"{files} only (no matplotlib needed)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=func)
    return p


def _values(items: list[str] | None, kind=float) -> list | None:
    if items is None:
        return None
    try:
        return [kind(v) for v in items]
    except ValueError as exc:
        raise MergeInputError(f"sweep values {items}: {exc}") from None


def cmd_sweep(args: argparse.Namespace) -> int:
    """sweep the pruning amount, λ, the number of merged tasks or any parameter (CSV + PNG)

    Merge repeatedly in memory (adapters read once) and report weight-space direction metrics per
    point (paper Fig. 5a, Fig. 9). Task scores need the Python API's evaluate callable.
    """
    from ..adapters import load_adapter_set
    from ..methods import get_method
    from .sweeps import STANDARD, run_sweeps, write_sweeps

    if (args.param is None) != (args.values is None):
        raise MergeInputError("--param NAME and --values V [V ...] go together")
    which = args.sweep if args.sweep is not None else ([] if args.param else list(STANDARD))
    adapters = load_adapter_set(args.adapters)
    adapters.materialize()
    params = parse_key_values(args.set or [], "--set")
    sweeps = run_sweeps(adapters, args.method, preset=args.preset, params=params, which=which,
                        custom={args.param: args.values} if args.param else None,
                        prune_values=_values(args.prune_values), lam_values=_values(args.lam_values),
                        task_counts=_values(args.task_counts, int), seed=args.seed, device=args.device,
                        progress=not args.quiet)
    default = get_method(args.method).default_preset
    settings = {"method": args.method, "preset": args.preset or default or "(none)", "params": params or "(preset)",
                "adapters": ", ".join(t.name for t in adapters.tasks)}
    written = write_sweeps(sweeps, args.out, figures=not args.no_figures, inputs=[t.path for t in adapters.tasks],
                           overwrite=args.overwrite, settings=settings)
    print(f"swept {', '.join(sweeps)} for {args.method} on {adapters.n} task adapters -> {args.out}: "
          f"{', '.join(written)}")
    return 0


def add_sweep_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``sweep`` on the main parser's sub-parsers; returns the new parser."""

    def own(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", required=True, metavar="DIR", help="output folder (must not exist or be empty)")
        p.add_argument("--method", default="robustmerge", help="merge rule (default robustmerge)")
        p.add_argument("--preset", help="named preset of the rule (e.g. official, paper, ablation-...)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="fix a parameter (repeatable)")
        p.add_argument("--sweep", nargs="+", choices=("prune", "lambda", "tasks"),
                       help="standard sweeps to run (default: all three, unless --param is given)")
        p.add_argument("--param", help="a custom parameter to sweep (with --values)")
        p.add_argument("--values", nargs="+", metavar="V", help="values of --param")
        p.add_argument("--prune-values", nargs="+", metavar="V", help="values of the pruning parameter "
                       "(robustmerge keep, ties density, pcb ratio, dare drop)")
        p.add_argument("--lam-values", nargs="+", metavar="V", help="values of λ")
        p.add_argument("--task-counts", nargs="+", metavar="K", help="numbers of merged tasks (first K in the given "
                       "order)")

    return _subcommand(subparsers, "sweep", cmd_sweep, own, merge_flag=None, files="CSV, JSON and Markdown")
