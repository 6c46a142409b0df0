"""Run a command as a child process and measure its wall time and peak resident memory."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_module_measured(module: str, args: list[str]) -> tuple[float, float]:
    """Run ``python -m module args`` in a child; return (wall seconds, the child's own peak
    RSS in MiB, from bench.hwm). Raises with the child's output on failure."""
    with tempfile.NamedTemporaryFile(suffix=".hwm") as hwm:
        cmd = [sys.executable, "-m", "bench.hwm", module, *args]
        t0 = time.perf_counter()
        root = str(Path(__file__).resolve().parents[1])  # so the child finds `bench` from any working directory
        path = os.pathsep.join([root] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
        env = {**os.environ, "BENCH_HWM_FILE": hwm.name, "PYTHONPATH": path}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return wall, int(open(hwm.name).read()) / 1024


def machine() -> str:
    import torch

    cores = os.cpu_count()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.machine()} {cores} cores, {mem:.0f} GiB RAM, Python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads)")


