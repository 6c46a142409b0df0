"""Merge-rule registry: every rule is a pure function on one module's stacked factors.

A rule has the signature ``rule(A, B, p, ctx) -> (A_merged, B_merged)`` with
``A: [N, r, d_in]`` and ``B: [N, d_out, r]`` (stored dtype, on the merge device), ``p`` the
validated parameter dict and ``ctx`` a :class:`ModuleContext`; it returns float32
``[r, d_in]`` and ``[d_out, r]``. Beside it each rule file has ``reference(A, B, p, ctx)``:
the paper's equations in plain torch, computed in float64 for float64 inputs (float32
otherwise), which ``tests/test_rule_parity.py`` checks the fast route against.

Rules are registered with :func:`register` (name, paper, parameters, presets, reference).
:func:`load_rules` imports every module of this package and then every rule file named by
``ROBUSTMERGE_RULES_PATH`` (see its docstring), so a new rule is one new file.
"""
from __future__ import annotations

import hashlib
import math
import importlib
import importlib.util
import os
import pkgutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import MergeInputError
from ..values import parse_bool


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
        """Convert a value (possibly a CLI or YAML string) and check it; raise MergeInputError if bad.

        A float must be finite (``nan``, ``inf`` and overflowing literals such as ``1e400``
        are refused whatever the range) and every range check is written so that it fails
        unless the value is inside; an int must be integral (``2.0`` is accepted, ``2.5``,
        ``nan`` and booleans are not); a bool is parsed strictly (:func:`parse_bool`).
        """
        if value is None:
            return value
        what = f"{method}: parameter {self.name}={value!r}"
        if self.kind is bool:
            return parse_bool(value, what, MergeInputError)
        if self.kind in (int, float):
            value = _parse_number(value, self.kind, what)
        else:
            try:
                value = self.kind(value)
            except (TypeError, ValueError):
                raise MergeInputError(f"{what} is not a {self.kind.__name__}") from None
        if self.choices is not None and value not in self.choices:
            raise MergeInputError(f"{method}: {self.name}={value!r} is not one of {list(self.choices)}")
        if not self._in_range(value):
            raise MergeInputError(f"{method}: {self.name}={value} is out of range {self.range_text()}")
        return value

    def _in_range(self, value: Any) -> bool:
        """True only when ``value`` lies inside the range (False for NaN: every test is
        written as "inside", never as "not outside")."""
        if self.low is not None and not (value > self.low if self.open_low else value >= self.low):
            return False
        if self.high is not None and not (value < self.high if self.open_high else value <= self.high):
            return False
        return True

    def range_text(self) -> str:
        if self.choices is not None:
            return "{" + ", ".join(map(str, self.choices)) + "}"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"{'(' if self.open_low or self.low is None else '['}{lo}, {hi}{')' if self.open_high or self.high is None else ']'}"


def _parse_number(value: Any, kind: type, what: str) -> int | float:
    """``value`` (a number or a CLI/YAML string) as a finite ``kind`` (int or float), or a
    MergeInputError saying why not."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise MergeInputError(f"{what} is not a {kind.__name__} (got {type(value).__name__})")
    try:
        number = float(value) if isinstance(value, str) else value
    except ValueError:
        raise MergeInputError(f"{what} is not a {kind.__name__}") from None
    if isinstance(number, float) and not math.isfinite(number):
        raise MergeInputError(f"{what} is not a finite number (NaN, Inf and overflowing values such as "
                              "1e400 are refused); give a finite value")
    if kind is int:
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        if float(number) != int(number):
            raise MergeInputError(f"{what} is not an integer; give a whole number")
        return int(number)
    return float(number)


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
    # the paper's equations, plain and float64-capable; same signature as ``rule``
    reference: Rule | None = None
    # update-level rules: update_rank(N, r, p) -> R (or None for a factor-level p). Then the rule
    # returns float64 A' [R, d_in], B' [d_out, R] with ΔW* = B'A' (output config's scaling) and the
    # reference returns the dense float64 ΔW* [d_out, d_in] (tests/test_spaces.py checks them)
    update_rank: Callable | None = None

    def out_rank(self, n: int, r: int, p: dict) -> int | None:
        """The written adapter's rank when ``p`` makes this rule update-level, else None."""
        return self.update_rank(n, r, p) if self.update_rank else None

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


def register(name: str | None = None, *, paper: str, params: list[Param], reference: Rule | None = None,
             presets: dict | None = None, default_preset: str | None = None, prepare: Callable | None = None,
             summary: str | None = None, update_rank: Callable | None = None):
    """Decorator: register a rule.

    ``name`` defaults to the function's name and ``summary`` (the line ``robustmerge
    methods`` prints) to the first line of its docstring. ``reference`` is the rule's plain
    formula; a rule written plainly already is its own reference (the default)."""

    def wrap(rule: Rule) -> Rule:
        key = name or rule.__name__
        if key in REGISTRY and REGISTRY[key].rule is not rule:
            raise MergeInputError(f"merge rule {key!r} is defined twice ({_origin(REGISTRY[key].rule)} and "
                                  f"{_origin(rule)}); rename one")
        text = summary if summary is not None else (rule.__doc__ or "").strip().split("\n")[0].strip()
        REGISTRY[key] = Method(key, rule, text, paper, tuple(params), dict(presets or {}), default_preset,
                               prepare, reference or rule, update_rank)
        return rule

    return wrap


def _origin(fn: Callable) -> str:
    return getattr(sys.modules.get(fn.__module__), "__file__", None) or fn.__module__


def get_method(name: str) -> Method:
    if name not in REGISTRY:
        raise MergeInputError(f"unknown merge method {name!r}; methods: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


RULES_PATH_VAR = "ROBUSTMERGE_RULES_PATH"
_NOT_RULES = {"common", "registry"}


def load_rules() -> None:
    """Register every rule: each module of ``robustmerge.methods`` (except ``common`` and
    ``registry``), then each rule file on ``$ROBUSTMERGE_RULES_PATH``.

    ``ROBUSTMERGE_RULES_PATH`` lists folders and ``.py`` files, separated by ``os.pathsep``
    (``:`` on Linux); a folder contributes every ``*.py`` in it not starting with ``_``, in
    name order. Each file is imported as module ``robustmerge_rules.<stem>`` and registers
    its rule with :func:`register` as it is imported. A missing path, a file that fails to
    import or a rule name given twice is a :class:`~robustmerge.errors.MergeInputError`.
    """
    for info in pkgutil.iter_modules(_package_path()):
        if info.name not in _NOT_RULES and not info.name.startswith("_"):
            importlib.import_module(f"{__package__}.{info.name}")
    for entry in filter(None, os.environ.get(RULES_PATH_VAR, "").split(os.pathsep)):
        for file in _rule_files(Path(entry)):
            _import_rule_file(file)


def _package_path() -> list[str]:
    return [str(Path(__file__).parent)]


def _rule_files(entry: Path) -> list[Path]:
    if entry.is_dir():
        return sorted(f for f in entry.glob("*.py") if not f.name.startswith("_"))
    if entry.is_file() and entry.suffix == ".py":
        return [entry]
    raise MergeInputError(f"{RULES_PATH_VAR}: {entry} is neither a folder nor a .py file; "
                          "list folders or .py files of merge rules")


def _import_rule_file(file: Path) -> None:
    module_name = f"robustmerge_rules.{file.stem}"
    if getattr(sys.modules.get(module_name), "__file__", None) == str(file):
        return  # loaded already
    spec = importlib.util.spec_from_file_location(module_name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a user's rule file: name the file, keep the cause
        del sys.modules[module_name]
        if isinstance(exc, MergeInputError):
            raise
        raise MergeInputError(f"{RULES_PATH_VAR}: {file} failed to import ({type(exc).__name__}: {exc}); "
                              "fix the rule file or remove it from the path") from exc


LAMBDA = Param("lam", 1.0, "λ, the scale of the merged factors", float, low=0.0)
LAMBDA_ON = Param(
    "lambda_on", "both",
    "where λ applies: 'both' scales A* and B* (ΔW* gets λ²), 'product' scales B* only (ΔW* gets λ)",
    str, choices=("both", "product"),
)


def lambdas(p: dict) -> tuple[float, float]:
    """(λ_A, λ_B) of ``lam`` and ``lambda_on``: (λ, λ) for 'both', (1, λ) for 'product'."""
    return (p["lam"] if p["lambda_on"] == "both" else 1.0), p["lam"]


def scale_pair(a: torch.Tensor, b: torch.Tensor, lam: float, on: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply λ to a merged (A*, B*) pair as ``lambda_on`` says."""
    return (a * lam if on == "both" else a), b * lam


FactorCombine = Callable[[torch.Tensor, dict, ModuleContext, str], torch.Tensor]


LAMBDA_UPDATE = Param("lam", 1.0, "λ, multiplies the merged update ΔW* once", float, low=0.0)


def per_factor(paper: str, params: list[Param], reference: Rule, space=None, **kwargs):
    """Decorator for the baselines on LoRA factors (RobustMerge paper, Appendix D): the fast
    ``combine(X, p, ctx, factor) -> X*`` (X: [N, ...] one stack, ``factor`` 'A' or 'B';
    float32 out) is applied to the A stack and to the B stack separately, then λ:

        A* = λ_A · combine(A),   B* = λ_B · combine(B)      ((λ_A, λ_B) = :func:`lambdas`)

    Registers that rule under ``combine``'s name and docstring, with ``lam`` and
    ``lambda_on`` appended to ``params``; ``reference(A, B, p, ctx)`` as for :func:`register`.

    ``space`` (optional, :class:`robustmerge.spaces.SpaceRoute`): adds its ``space`` (default
    'factors', today's route) and ``out_rank`` parameters; for any other space the rule and the
    reference are the route's update-level ones (λ multiplies ΔW* once; ``lambda_on`` unused)."""

    def wrap(combine: FactorCombine) -> FactorCombine:
        def rule(A, B, p, ctx):
            if space is not None and p["space"] != "factors":
                return space.rule(A, B, p, ctx)
            return scale_pair(combine(A, p, ctx, "A"), combine(B, p, ctx, "B"), p["lam"], p["lambda_on"])

        ref, extra = reference, []
        if space is not None:
            def ref(A, B, p, ctx):
                return (reference if p["space"] == "factors" else space.reference)(A, B, p, ctx)

            ref.__doc__, ref.__module__ = reference.__doc__, reference.__module__
            extra = space.params
            kwargs["update_rank"] = space.update_rank

        rule.__name__, rule.__doc__, rule.__module__ = combine.__name__, combine.__doc__, combine.__module__
        register(paper=paper, params=[*params, LAMBDA, LAMBDA_ON, *extra], reference=ref, **kwargs)(rule)
        return combine

    return wrap
