"""Analyses of LoRA merges: spectra without dense SVDs, direction robustness (paper Fig. 7),
singular values before and after pruning (Fig. 3a, Fig. 8), sweeps (Fig. 5a, Fig. 9).

See ``docs/analysis.md`` for the definitions and the ``robustmerge analyze`` / ``sweep`` CLI.
Names are imported lazily (so the CLI stays cheap); matplotlib only when a figure is drawn.
"""

_EXPORTS = {
    "analyze": "pipeline", "write_analysis": "pipeline",
    "Directions": "direction", "direction_metrics": "direction", "module_directions": "direction",
    "MergedAdapter": "factors", "layer_groups": "factors", "task_factors": "factors",
    "LowRankSVD": "spectra", "lowrank_svd": "spectra", "pruning_spectra": "spectra", "singular_values": "spectra",
    "run_sweeps": "sweeps", "sweep": "sweeps", "sweep_tasks": "sweeps", "weight_space_metrics": "sweeps",
    "write_csv": "sweeps", "write_sweeps": "sweeps",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'robustmerge.analysis' has no attribute {name!r}")
