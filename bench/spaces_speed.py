"""LoRA-native merge spaces against the dense reference of the same rule.

    python -m bench.spaces_speed [--tasks 8] [--rank 16] [--shapes 4096x4096] [--rules ...] [--json out.json]

Inputs: per module shape (d_out x d_in; LLaVA-1.5-7B: q/k/v/o 4096x4096, gate/up 11008x4096,
down 4096x11008) N seeded random LoRA task factors of rank r (float32, A ~ U(±1/√d_in),
B ~ 0.02·N(0,1)). For each rule setting two child processes (one after another) run the same
merge on the same inputs: the fast route (``Method.rule``, from the factors, rank-N·r output)
and the dense reference (``Method.reference``: dense float64 ΔW_n and dense SVDs). Each child
reports the merge's own time and its peak-RSS increase over the RSS after building the inputs
(current RSS sampled from /proc/self/statm every millisecond by a thread during the merge, so the
~0.4 GB of the interpreter and torch is excluded) and its whole peak RSS (wait4), both in the table.
The max relative ΔW difference is ‖B'A' − ΔW_ref‖_F / ‖ΔW_ref‖_F. A whole model is 32 layers ×
7 modules: per-module figures times 32 × (4 of 4096x4096 + 3 of 4096x11008) extrapolate it.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from .measure import machine, run_module_measured

RULES = ["task_arithmetic:space=core", "ties:space=core", "tsv:space=core", "iso_c:space=core",
         "cart:space=core", "ties:space=knots", "tsv:space=full", "dc_merge:smoothing=avg"]


def parse_rule(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    return name, dict(kv.split("=", 1) for kv in rest.split(",") if kv)


def inputs(n: int, r: int, d_out: int, d_in: int):
    import torch

    g = torch.Generator().manual_seed(1234)
    A = (torch.rand(n, r, d_in, generator=g) * 2 - 1) / d_in ** 0.5  # [N, r, d_in]
    B = torch.randn(n, d_out, r, generator=g) * 0.02  # [N, d_out, r]
    return A, B


def child(rule: str, route: str, n: int, r: int, d_out: int, d_in: int, out: str) -> None:
    """One measurement: build the inputs, run the route, save what the parent compares."""
    import torch

    from robustmerge.methods import REGISTRY, ModuleContext

    torch.set_num_threads(1)
    name, params = parse_rule(rule)
    m = REGISTRY[name]
    p = m.resolve(None, params)
    A, B = inputs(n, r, d_out, d_in)
    sampler = RssSampler()
    t0 = time.perf_counter()
    with sampler:
        result = m.rule(A, B, p, ModuleContext("m")) if route == "fast" else m.reference(A, B, p, ModuleContext("m"))
    seconds = time.perf_counter() - t0
    torch.save(result, out)
    print(json.dumps({"seconds": seconds, "rss_increase_mib": sampler.increase_mib()}))


class RssSampler:
    """Peak of the current RSS (from /proc/self/statm) above its value at entry, sampled every 1 ms."""

    def __enter__(self):
        import threading

        self.page = resource.getpagesize()
        self.start = self.peak = self._rss()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self):
        while not self.stop.wait(0.001):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self._rss())

    def increase_mib(self) -> float:
        return (self.peak - self.start) / 2**20


def measure(rule: str, n: int, r: int, d_out: int, d_in: int, tmp: Path) -> dict:
    import torch

    row = {"rule": rule, "shape": f"{d_out}x{d_in}", "N": n, "r": r}
    for route in ("fast", "dense"):
        out = tmp / f"{route}.pt"
        wall, peak = run_module_measured("bench.spaces_speed", ["--child", rule, route, str(n), str(r), str(d_out),
                                                                 str(d_in), str(out)])
        row[route] = {"wall_s": round(wall, 2), "peak_rss_mib": round(peak, 1)}
        row[route].update(json.loads(Path(str(out) + ".json").read_text()))
    a, b = torch.load(tmp / "fast.pt", weights_only=True)
    ref = torch.load(tmp / "dense.pt", weights_only=True)
    row["max_rel_delta_diff"] = ((b @ a - ref).norm() / ref.norm()).item()
    row["speedup"] = row["dense"]["seconds"] / row["fast"]["seconds"]
    row["memory_ratio"] = row["dense"]["rss_increase_mib"] / max(row["fast"]["rss_increase_mib"], 1e-3)
    return row


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        rule, route, n, r, d_out, d_in, out = argv[1:8]
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            child(rule, route, int(n), int(r), int(d_out), int(d_in), out)
        Path(out + ".json").write_text(buf.getvalue().strip().splitlines()[-1])
        return 0
    ap = argparse.ArgumentParser(prog="python -m bench.spaces_speed", description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--shapes", default="4096x4096", help="comma-separated d_out x d_in")
    ap.add_argument("--rules", default=",".join(RULES).replace(",", ";"), help="';'-separated name:k=v,k=v")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    print(machine(), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes.split(","):
            d_out, d_in = map(int, shape.split("x"))
            for rule in args.rules.split(";"):
                row = measure(rule, args.tasks, args.rank, d_out, d_in, Path(tmp))
                rows.append(row)
                print(f"{rule:28s} {shape:>10s}  fast {row['fast']['seconds']:8.3f} s {row['fast']['rss_increase_mib']:8.1f} MiB"
                      f"  dense {row['dense']['seconds']:8.2f} s {row['dense']['rss_increase_mib']:8.1f} MiB"
                      f"  x{row['speedup']:7.1f} time  x{row['memory_ratio']:6.1f} mem  rel.diff {row['max_rel_delta_diff']:.1e}",
                      flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
