"""Command line: ``robustmerge merge``, ``robustmerge methods``, ``robustmerge example``.

Errors a user can cause print one line ``robustmerge: error: ...`` and exit with status 2.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import sys
from pathlib import Path

from .errors import MergeInputError
from robustmerge.errors import cli_main
from .taskfolder import ADAPTER_BIN, MERGE_RECORD


def parse_key_values(items: list[str], what: str = "--set") -> dict:
    """``["k=v", ...]`` -> ``{k: v}`` (values stay strings; the rule's parameters parse them)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise MergeInputError(f"{what} {item!r}: expected key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def _read_config(path: str | None) -> dict:
    if not path:
        return {}
    import yaml

    p = Path(path)
    if not p.is_file():
        raise MergeInputError(f"{p}: config file not found")
    try:
        cfg = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise MergeInputError(f"{p}: not valid YAML ({exc})") from exc
    allowed = {"method", "preset", "params", "adapters", "out", "device", "seed", "extras", "write_bin", "overwrite", "hash_inputs"}
    if not isinstance(cfg, dict) or set(cfg) - allowed:
        raise MergeInputError(f"{p}: expected a mapping with keys among {sorted(allowed)}, found {sorted(cfg) if isinstance(cfg, dict) else type(cfg).__name__}")
    return cfg


def keep_freed_memory() -> None:
    """glibc only: serve allocations up to 32 MiB from the heap and keep up to 512 MiB of freed
    memory instead of returning it to the system. A merge allocates and frees the same
    module-sized tensors over and over; returned memory must be faulted in again page by page
    (≈ a second of CPU per 8 GB). Process-wide, so only the CLI sets it."""
    if not sys.platform.startswith("linux") or os.environ.get("ROBUSTMERGE_DEFAULT_MALLOC"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 512 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        pass


def cmd_merge(args: argparse.Namespace) -> int:
    keep_freed_memory()
    cfg = _read_config(args.config)
    params = dict(cfg.get("params") or {})
    params.update(parse_key_values(args.set or []))
    adapters = args.adapters or cfg.get("adapters")
    out = args.out or cfg.get("out")
    if not adapters or not out:
        raise MergeInputError("--adapters DIR [DIR ...] and --out DIR are required (or give them in --config)")
    hash_inputs = not args.no_hash and bool(cfg.get("hash_inputs", True))
    hasher = None
    if hash_inputs:  # start hashing on the idle core while torch is imported
        from .hashing import InputHasher, task_files

        hasher = InputHasher(task_files(adapters))
    from .driver import _merge_to_folder  # merge_to_folder with the hasher already running

    record = _merge_to_folder(
        adapters, out,
        method=args.method or cfg.get("method", "robustmerge"),
        preset=args.preset or cfg.get("preset"),
        params=params,
        device=args.device or cfg.get("device", "cpu"),
        seed=args.seed if args.seed is not None else int(cfg.get("seed", 0)),
        extras=args.extras or cfg.get("extras", "mean"),
        overwrite=args.overwrite or bool(cfg.get("overwrite", False)),
        write_bin=args.write_bin or bool(cfg.get("write_bin", False)),
        hash_inputs=hash_inputs,
        progress=not args.quiet,
        hasher=hasher,
    )
    params_text = ", ".join(f"{k}={v}" for k, v in record["params"].items())
    print(f"merged {len(record['inputs'])} adapters with {record['method']}"
          f"{' (' + record['preset'] + ')' if record['preset'] else ''} [{params_text}] -> {out} "
          f"in {record['wall_time_s']:.2f} s")
    for line in record["harmonisation"]:
        print(f"  {line}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from .methods import REGISTRY

    if args.json:
        print(json.dumps({
            name: {"summary": m.summary, "paper": m.paper, "presets": m.presets, "default_preset": m.default_preset,
                   "params": {p.name: {"default": p.default, "range": p.range_text(), "doc": p.doc} for p in m.params}}
            for name, m in sorted(REGISTRY.items())}, indent=2))
        return 0
    for name, m in sorted(REGISTRY.items()):
        print(f"{name}: {m.summary}")
        print(f"  paper: {m.paper}")
        for p in m.params:
            print(f"  --set {p.name}=<{p.kind.__name__}>  default {p.default!r}, range {p.range_text()}: {p.doc}")
        for preset, values in m.presets.items():
            default = " (default)" if preset == m.default_preset else ""
            print(f"  --preset {preset}{default}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
        print()
    return 0


def cmd_example(args: argparse.Namespace) -> int:
    from .example import run_example

    return run_example(Path(args.out), seed=args.seed, overwrite=args.overwrite)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo.pipeline import run_demo, summary_lines

    report = run_demo(args.out, seed=args.seed, quick=args.quick, fresh=args.fresh, cache_dir=args.cache,
                      threads=args.threads, progress=not args.no_progress)
    print()
    print(report.table_markdown, end="")
    print()
    print("\n".join(summary_lines(report)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robustmerge", description="Merge LoRA task adapters (RobustMerge and baselines).")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    m = sub.add_parser("merge", help="merge task adapters into one adapter folder")
    m.add_argument("--method", help="merge rule (see `robustmerge methods`); default robustmerge")
    m.add_argument("--adapters", nargs="+", metavar="DIR", help="task adapter folders, in merge order")
    m.add_argument("--out", metavar="DIR", help="output folder (must not exist or be empty, unless --overwrite)")
    m.add_argument("--preset", help="named parameter preset (robustmerge: official | paper)")
    m.add_argument("--set", action="append", metavar="KEY=VALUE", help="set a parameter (repeatable)")
    m.add_argument("--config", metavar="FILE.yaml", help="YAML with method/preset/params/adapters/out/...; flags win")
    m.add_argument("--device", help="cpu | cuda[:N] | auto (default cpu)")
    m.add_argument("--seed", type=int, help="seed for randomised rules (DARE); default 0")
    m.add_argument("--extras", choices=("mean", "first", "drop"), help="rule for non-LoRA weights (projector); default mean")
    m.add_argument("--write-bin", action="store_true", help=f"also write the legacy {ADAPTER_BIN}")
    m.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    m.add_argument("--no-hash", action="store_true",
                   help=f"skip the inputs' sha256 in {MERGE_RECORD} (saves ~1 CPU-second per 2 GB of inputs)")
    m.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    m.set_defaults(func=cmd_merge)

    ls = sub.add_parser("methods", help="list merge methods, their parameters, defaults and papers")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_methods)

    ex = sub.add_parser("example", help="generate tiny task adapters and merge them with every method")
    ex.add_argument("--out", default="results/example", help="folder for the generated adapters and merges")
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--overwrite", action="store_true")
    ex.set_defaults(func=cmd_example)

    de = sub.add_parser("demo", help="end-to-end demo: train a tiny LLaVA and task adapters on a generated "
                                     "miniature of MM-MergeBench, merge with every method, print the table")
    de.add_argument("--out", default="results/demo", help="results folder (default results/demo)")
    de.add_argument("--seed", type=int, default=0, help="seed of the data and of every training run")
    de.add_argument("--quick", action="store_true", help="smaller data and training (a smoke test, ~2 min)")
    de.add_argument("--fresh", action="store_true", help="rebuild the cached data, base, adapters and merges")
    de.add_argument("--cache", default=".cache/demo", help="cache folder (default .cache/demo)")
    de.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: faster than 2 for this tiny model on a shared 2-core machine)")
    de.add_argument("--no-progress", action="store_true", help="no progress bars")
    de.set_defaults(func=cmd_demo)

    from .analysis.cli import add_analyze_parser, add_sweep_parser

    add_analyze_parser(sub)
    add_sweep_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return cli_main(lambda: args.func(args), prog="robustmerge")


if __name__ == "__main__":
    sys.exit(main())
