"""Markdown summaries of an analysis report and of sweeps: the numbers, and links to the
figures and the JSON / CSV files written next to them."""
from __future__ import annotations

import math

DEFINITIONS = (
    "For task n with `ΔW_n = Σ_i σ_i u_i v_iᵀ` and merged update `ΔW*` (same module, LoRA scaling "
    "applied): direction similarity `c_i = cos(ΔW* v_i, u_i)`, magnitude ratio `m_i = ‖ΔW* v_i‖ / σ_i`. "
    "*largest* = i = 1; *rest* = unweighted mean over the other non-zero singular directions. "
    "Both are 1 when the merge acts on task n's directions exactly as task n did. Values are means over "
    "modules (and, for *mean*, over tasks)."
)


def _f(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) >= 1e3 or (v != 0 and abs(v) < 1e-2) else f"{v:.{digits}f}"
    return str(v)


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_f(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _head_tail(s: list[float]) -> float:
    rest = [v for v in s[1:] if v]
    return s[0] / (sum(rest) / len(rest)) if rest and s[0] else math.nan


def analysis_markdown(report: dict, pngs: dict[str, str]) -> str:
    """The README.md of an analysis folder."""
    st = report["settings"]
    lines = ["# Merge analysis", ""]
    lines += [f"- task adapters ({len(report['tasks'])}): " + ", ".join(f"`{t}`" for t in report["tasks"]),
              f"- modules: {report['n_modules']}, rank {report['rank']}",
              "- layer groups: " + "; ".join(f"{g} ({len(ls)} layers)" for g, ls in report["layer_groups"].items()),
              f"- pruning spectra: keep {st['keep']:g}, clamp ratio {st['clamp_ratio']:g}",
              "- numbers: [`analysis.json`](analysis.json) (every value below, per module too)", ""]
    if report["merged"]:
        lines += ["Merged adapters:", ""]
        for m in report["merged"]:
            params = m.get("params") or {}
            ptxt = ", ".join(f"{k}={v}" for k, v in params.items())
            lines.append(f"- **{m['label']}**: {m.get('source', '')}"
                         + (f", method {m['method']}" if m.get("method") else "")
                         + (f" ({m['preset']})" if m.get("preset") else "") + (f" [{ptxt}]" if ptxt else ""))
        lines.append("")
        lines += _direction_md(report, pngs)
    lines += _spectra_md(report, pngs)
    return "\n".join(lines)


def _direction_md(report: dict, pngs: dict[str, str]) -> list[str]:
    lines = ["## Direction robustness (paper Fig. 7)", "", DEFINITIONS, ""]
    header = ["merge", "cos largest", "cos rest", "ratio largest", "ratio rest"]
    lines += ["Mean over tasks and all modules:", ""]
    lines += _table(header, [[lab, d["mean"]["all"]["top_cos"], d["mean"]["all"]["rest_cos"],
                              d["mean"]["all"]["top_ratio"], d["mean"]["all"]["rest_ratio"]]
                             for lab, d in report["direction"].items()])
    for lab, d in report["direction"].items():
        lines += [f"Per task, **{lab}** (all modules):", ""]
        lines += _table(["task"] + header[1:], [[t, v["all"]["top_cos"], v["all"]["rest_cos"], v["all"]["top_ratio"],
                                                 v["all"]["rest_ratio"]] for t, v in d["tasks"].items()])
    groups = list(report["layer_groups"])
    if len(groups) > 1:
        lines += ["Per layer group (mean over tasks), cos largest / cos rest / ratio largest / ratio rest:", ""]
        rows = []
        for lab, d in report["direction"].items():
            rows.append([lab] + [" / ".join(_f(d["mean"][g][k]) for k in ("top_cos", "rest_cos", "top_ratio",
                                                                            "rest_ratio")) for g in groups])
        lines += _table(["merge"] + groups, rows)
    for name in ("direction_by_task.png", "direction_by_layer_group.png", "direction_by_index.png"):
        if name in pngs:
            lines += [f"![{name}]({name})", "", f"*{pngs[name]}*", ""]
    return lines


def _spectra_md(report: dict, pngs: dict[str, str]) -> list[str]:
    sp = report["spectra"]
    lines = ["## Singular values (paper Fig. 3a, Fig. 8)", "",
             "Singular values from thin QR of the factors and an SVD of the r × r core (exact; no dense ΔW). "
             "σ_1 and σ_r are means over modules (and tasks); gap = σ_1 / mean(σ_2..σ_r).", ""]
    rows = []
    for key, label in (("original", "tasks, original B·A"), ("pruned", "tasks, pruned B̃·Ã"),
                       ("pruned_scaled", "tasks, pruned + scaled B̃·diag(Ŝ)·Ã")):
        s = sp["pruning"][key]
        rows.append([label, s[0], s[-1], _head_tail(s)])
    for lab, s in sp["merged"].items():
        rows.append([f"merged: {lab}", s[0], s[-1], _head_tail(s)])
    lines += _table(["update", "σ_1", "σ_r", "gap"], rows)
    for name in ("spectra.png", "spectra_by_layer.png"):
        if name in pngs:
            lines += [f"![{name}]({name})", "", f"*{pngs[name]}*", ""]
    return lines


def sweeps_markdown(sweeps: dict[str, dict], pngs: dict[str, str], settings: dict) -> str:
    """The README.md of a sweeps folder: one table and figure per sweep."""
    lines = ["# Merge sweeps", ""]
    if settings:
        lines += [f"- {k}: {v}" for k, v in settings.items()] + [""]
    lines += ["Weight-space columns (`dir_*`): " + DEFINITIONS, ""]
    for name, s in sweeps.items():
        lines += [f"## {s['title']}", "", f"Data: [`{name}.csv`]({name}.csv)", ""]
        rows = s["rows"]
        if rows:
            cols = [c for c in rows[0] if c not in ("method", "preset")]
            lines += _table(cols, [[r.get(c) for c in cols] for r in rows])
        if name in pngs:
            lines += [f"![{name}]({pngs[name]})", ""]
    return "\n".join(lines)
