"""robustmerge: merge LoRA task adapters with RobustMerge and its baselines."""

__version__ = "0.1.0"
