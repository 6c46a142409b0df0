"""robustmerge: merge LoRA task adapters with RobustMerge and its baselines."""

__version__ = "0.1.0"

_EXPORTS = {
    "AdapterSet": "adapters", "load_adapter_set": "adapters", "MergeInputError": "errors",
    "MergeResult": "driver", "merge": "driver", "merge_to_folder": "driver",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):  # lazy: `import robustmerge` stays cheap (no torch) until used
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'robustmerge' has no attribute {name!r}")
