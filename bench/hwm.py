"""Run a module as ``__main__`` and record this process's peak resident memory at exit.

    BENCH_HWM_FILE=peak.txt python -m bench.hwm MODULE [ARGS ...]

The peak is VmHWM of /proc/self/status: the high-water mark of this program's own address
space. (A child's ru_maxrss would also count the parent's memory at fork time.)
"""
import atexit
import os
import runpy
import sys


def _record() -> None:
    path = os.environ.get("BENCH_HWM_FILE")
    if not path:
        return
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    with open(path, "w") as f:
        f.write(str(kib))


if __name__ == "__main__":
    atexit.register(_record)
    module, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
