"""Merge rules, registered by name: one file per rule. Importing this package registers every
module here and every rule file on ``$ROBUSTMERGE_RULES_PATH`` (:func:`.registry.load_rules`)."""
from .registry import REGISTRY, Method, ModuleContext, Param, get_method, load_rules, per_factor, register

load_rules()

__all__ = ["REGISTRY", "Method", "ModuleContext", "Param", "get_method", "load_rules", "per_factor", "register"]
