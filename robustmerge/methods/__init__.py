"""Merge rules, registered by name. Importing this package registers every rule."""
from . import dare, pcb, robustmerge, task_arithmetic, ties  # noqa: F401  (registration)
from .registry import REGISTRY, Method, ModuleContext, Param, get_method

__all__ = ["REGISTRY", "Method", "ModuleContext", "Param", "get_method"]
