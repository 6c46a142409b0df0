"""Merge-rule registry: every rule is a pure function on one module's stacked factors.

A rule has the signature ``rule(A, B, p, ctx) -> (A_merged, B_merged)`` with
``A: [N, r, d_in]`` and ``B: [N, d_out, r]`` (stored dtype, on the merge device), ``p`` the
validated parameter dict and ``ctx`` a :class:`ModuleContext`; it returns float32
``[r, d_in]`` and ``[d_out, r]``. Rules are registered by name with their paper, their
parameters (default, range, meaning) and named presets.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..errors import MergeInputError


@dataclass(frozen=True)
class Param:
    """One hyper-parameter: name, default, meaning, and its allowed values."""

    name: str
    default: Any
    doc: str
    kind: type = float
    low: float | None = None  # allowed range, inclusive unless open_low / open_high
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple | None = None

    def parse(self, value: Any, method: str) -> Any:
        """Convert a value (possibly a CLI string) and check it; raise MergeInputError if bad."""
        try:
            if self.kind is bool and isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                value = value.lower() in ("true", "1", "yes")
            elif value is not None:
                value = self.kind(value)
        except (TypeError, ValueError):
            raise MergeInputError(f"{method}: parameter {self.name}={value!r} is not a {self.kind.__name__}") from None
        if self.choices is not None and value not in self.choices:
            raise MergeInputError(f"{method}: {self.name}={value!r} is not one of {list(self.choices)}")
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            raise MergeInputError(f"{method}: {self.name}={value} is out of range {self.range_text()}")
        if self.high is not None and (value > self.high or (self.open_high and value == self.high)):
            raise MergeInputError(f"{method}: {self.name}={value} is out of range {self.range_text()}")
        return value

    def range_text(self) -> str:
        if self.choices is not None:
            return "{" + ", ".join(map(str, self.choices)) + "}"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"{'(' if self.open_low or self.low is None else '['}{lo}, {hi}{')' if self.open_high or self.high is None else ']'}"


@dataclass
class ModuleContext:
    """What a rule may know besides the factors: the module, the seed, global statistics."""

    module: str
    seed: int = 0
    stats: dict = field(default_factory=dict)

    def generator(self, factor: str) -> torch.Generator:
        """A CPU generator seeded from (seed, module, factor): the same bytes on any device
        and in any module order."""
        digest = hashlib.sha256(f"{self.seed}/{self.module}/{factor}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


Rule = Callable[[torch.Tensor, torch.Tensor, dict, ModuleContext], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Method:
    name: str
    rule: Rule
    summary: str
    paper: str
    params: tuple[Param, ...]
    presets: dict[str, dict] = field(default_factory=dict)
    default_preset: str | None = None
    # prepare(adapter_set, params) -> stats dict, for rules that need whole-model statistics
    prepare: Callable | None = None

    def resolve(self, preset: str | None = None, overrides: dict | None = None) -> dict:
        """Defaults, then the preset, then overrides; every value validated."""
        values = {p.name: p.default for p in self.params}
        preset = preset if preset is not None else self.default_preset
        if preset is not None:
            if preset not in self.presets:
                raise MergeInputError(
                    f"{self.name}: unknown preset {preset!r}; presets: {sorted(self.presets) or 'none'}"
                )
            values.update(self.presets[preset])
        known = {p.name: p for p in self.params}
        for key, value in (overrides or {}).items():
            if key not in known:
                raise MergeInputError(
                    f"{self.name}: unknown parameter {key!r}; parameters: {', '.join(known)}"
                )
            values[key] = value
        return {k: known[k].parse(v, self.name) for k, v in values.items()}


REGISTRY: dict[str, Method] = {}


def register(name: str, *, summary: str, paper: str, params: list[Param], presets: dict | None = None,
             default_preset: str | None = None, prepare: Callable | None = None):
    """Decorator: register a rule under ``name``."""

    def wrap(rule: Rule) -> Rule:
        REGISTRY[name] = Method(name, rule, summary, paper, tuple(params), dict(presets or {}),
                                default_preset, prepare)
        return rule

    return wrap


def get_method(name: str) -> Method:
    if name not in REGISTRY:
        raise MergeInputError(f"unknown merge method {name!r}; methods: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


LAMBDA = Param("lam", 1.0, "λ, the scale of the merged factors", float, low=0.0)
LAMBDA_ON = Param(
    "lambda_on", "both",
    "where λ applies: 'both' scales A* and B* (ΔW* gets λ²), 'product' scales B* only (ΔW* gets λ)",
    str, choices=("both", "product"),
)


def scale_pair(a: torch.Tensor, b: torch.Tensor, lam: float, on: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply λ to a merged (A*, B*) pair as ``lambda_on`` says."""
    return (a * lam if on == "both" else a), b * lam
