"""PNG figures of an analysis report and of sweeps (matplotlib, the optional ``plot`` extra).

matplotlib is imported only when a figure is drawn, through the object API (``Figure`` +
Agg canvas): no pyplot, no global backend state. Every axis is labelled.
"""
from __future__ import annotations

import math
from pathlib import Path

from ..errors import MergeInputError

PLOT_HINT = ("matplotlib is not installed: install the plot extra (pip install -c constraints.txt -e '.[plot]', "
             "or pip install matplotlib), or pass --no-figures")


def require_matplotlib():
    """Import matplotlib's Figure class or raise one clear error naming the ``plot`` extra."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MergeInputError(PLOT_HINT) from exc
    return Figure


def _figure(nrows: int, ncols: int, width: float = 5.2, height: float = 3.6):
    Figure = require_matplotlib()
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _num(v) -> float:
    return math.nan if v is None else float(v)


def _bars(ax, categories: list[str], series: dict[str, list[float]], ylabel: str, title: str, ref: float | None):
    """Grouped bars: one group per category, one bar per series."""
    width = 0.8 / max(1, len(series))
    for j, (name, values) in enumerate(series.items()):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(categories))]
        ax.bar(xs, [_num(v) for v in values], width, label=name)
    ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right")
    if ref is not None:
        ax.axhline(ref, color="0.3", lw=0.8, ls="--")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)


def _direction_grid(report: dict, categories: list[str], pick, xlabel: str, title: str):
    """2×2 grid: rows cos / ratio, columns largest / rest; bars per merged adapter."""
    n_bars = len(categories) * max(1, len(report["direction"]))
    fig, axes = _figure(2, 2, width=min(9.0, max(5.2, 0.25 * n_bars + 2.5)))
    cells = [("top_cos", "direction similarity cos(ΔW* v₁, u₁)", "largest singular direction", 1.0),
             ("rest_cos", "direction similarity, mean over i ≥ 2", "other singular directions", 1.0),
             ("top_ratio", "magnitude ratio ‖ΔW* v₁‖ / σ₁", "largest singular direction", 1.0),
             ("rest_ratio", "magnitude ratio, mean over i ≥ 2", "other singular directions", 1.0)]
    for ax, (key, ylabel, sub, ref) in zip(axes.flat, cells):
        series = {lab: [pick(d, c)[key] for c in categories] for lab, d in report["direction"].items()}
        _bars(ax, categories, series, ylabel, sub, ref)
        ax.set_xlabel(xlabel)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, title="merge", loc="outside lower center", ncol=min(4, len(labels)),
               fontsize="small")
    fig.suptitle(title)
    return fig


def analysis_figures(report: dict, folder: Path) -> dict[str, str]:
    """Draw every figure of an analysis report into ``folder``; returns {file name: caption}."""
    folder = Path(folder)
    out: dict[str, str] = {}
    if report["direction"]:
        tasks = report["tasks"]
        fig = _direction_grid(report, tasks + ["mean"],
                              lambda d, c: d["mean"]["all"] if c == "mean" else d["tasks"][c]["all"],
                              "task", "Direction robustness per task (paper Fig. 7), mean over modules")
        fig.savefig(folder / "direction_by_task.png", dpi=110)
        out["direction_by_task.png"] = ("Fig. 7: per task, cos(ΔW* v_i, u_i) and ‖ΔW* v_i‖/σ_i for the largest "
                                        "singular direction and the mean over the others (mean over modules; "
                                        "dashed line: a merge that keeps the task exactly).")
        groups = [g for g in report["layer_groups"]] or ["all"]
        fig = _direction_grid(report, groups, lambda d, c: d["mean"][c], "layer group",
                              "Direction robustness per layer group (mean over tasks and modules)")
        fig.savefig(folder / "direction_by_layer_group.png", dpi=110)
        out["direction_by_layer_group.png"] = "The Fig. 7 metrics per contiguous layer group, mean over tasks."
        fig = _by_index(report)
        fig.savefig(folder / "direction_by_index.png", dpi=110)
        out["direction_by_index.png"] = ("Direction similarity and magnitude ratio against the singular index i "
                                         "(mean over tasks and modules).")
    fig = _spectra(report)
    fig.savefig(folder / "spectra.png", dpi=110)
    out["spectra.png"] = ("Fig. 3a: mean singular values of each task's ΔW and of each merged ΔW*; and of ΔW before "
                          "pruning, after pruning, and after pruning with complementary scaling.")
    fig = _spectra_by_layer(report)
    fig.savefig(folder / "spectra_by_layer.png", dpi=110)
    out["spectra_by_layer.png"] = ("Fig. 8: normalised singular values σ_i/σ_1 per layer, and the head-tail gap "
                                   "σ_1 / mean(σ_2..σ_r) per layer before and after pruning.")
    return out


def _by_index(report: dict):
    fig, axes = _figure(1, 2)
    for lab, d in report["direction"].items():
        idx = d["by_index"]
        ks = [i + 1 for i, c in enumerate(idx["count"]) if c > 0]
        axes[0, 0].plot(ks, [_num(idx["cos"][k - 1]) for k in ks], marker="o", label=lab)
        axes[0, 1].plot(ks, [_num(idx["ratio"][k - 1]) for k in ks], marker="o", label=lab)
    ylabels = ("direction similarity cos(ΔW* v_i, u_i)", "magnitude ratio ‖ΔW* v_i‖ / σ_i")
    for ax, ylabel in zip(axes[0], ylabels):
        ax.set_xlabel("singular index i (1 = largest)")
        ax.set_ylabel(ylabel)
        ax.axhline(1.0, color="0.3", lw=0.8, ls="--")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(title="merge", fontsize="small")
    fig.suptitle("Direction robustness by singular index")
    return fig


def _positive(values) -> list[float]:
    return [v if v is not None and v > 0 else math.nan for v in values]


def _spectra(report: dict):
    sp = report["spectra"]
    fig, axes = _figure(1, 2)
    ax = axes[0, 0]
    for t, s in sp["per_task"].items():
        ax.plot(range(1, len(s) + 1), _positive(s), marker=".", label=t)
    for lab, s in sp["merged"].items():
        ax.plot(range(1, len(s) + 1), _positive(s), ls="--", lw=2, label=f"merged: {lab}")
    ax.set_yscale("log")
    ax.set_xlabel("singular index i")
    ax.set_ylabel("σ_i (mean over modules)")
    ax.set_title("task updates ΔW_n and merged ΔW*")
    ax.legend(fontsize="x-small", ncol=2)
    ax = axes[0, 1]
    names = {"original": "original B·A", "pruned": "pruned B̃·Ã",
             "pruned_scaled": "pruned + scaled B̃·diag(Ŝ)·Ã"}
    for key, label in names.items():
        s = sp["pruning"][key]
        ax.plot(range(1, len(s) + 1), _positive(s), marker="o", label=label)
    st = report["settings"]
    ax.set_yscale("log")
    ax.set_xlabel("singular index i")
    ax.set_ylabel("σ_i (mean over tasks and modules)")
    ax.set_title(f"pruning (keep {st['keep']:g}, clamp ratio {st['clamp_ratio']:g})")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.suptitle("Singular value spectra (paper Fig. 3a)")
    return fig


def _head_tail(s: list[float]) -> float:
    rest = [v for v in s[1:] if v is not None and v > 0]
    return s[0] / (sum(rest) / len(rest)) if rest and s[0] else math.nan


def _spectra_by_layer(report: dict):
    from matplotlib import colormaps
    from matplotlib.ticker import MaxNLocator

    by_layer = {k: v for k, v in report["spectra"]["by_layer"].items() if k != "None"}
    layers = sorted(by_layer, key=int)
    fig, axes = _figure(1, 2)
    cmap = colormaps["viridis"]
    ax = axes[0, 0]
    for j, layer in enumerate(layers):
        s = by_layer[layer]["original"]
        norm = [v / s[0] if s[0] else math.nan for v in s]
        ax.plot(range(1, len(s) + 1), _positive(norm), color=cmap(j / max(1, len(layers) - 1)),
                label=f"layer {layer}" if len(layers) <= 12 else None)
    ax.set_yscale("log")
    ax.set_xlabel("singular index i")
    ax.set_ylabel("σ_i / σ_1 (mean over tasks and modules)")
    ax.set_title("normalised spectrum per layer (dark = shallow)")
    if len(layers) <= 12:
        ax.legend(fontsize="x-small", ncol=2)
    ax = axes[0, 1]
    xs = [int(layer) for layer in layers]
    for key, label in (("original", "original"), ("pruned", "pruned"), ("pruned_scaled", "pruned + scaled")):
        ax.plot(xs, [_head_tail(by_layer[layer][key]) for layer in layers], marker="o", label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel("head-tail gap σ_1 / mean(σ_2..σ_r)")
    ax.set_title("singular value gap per layer")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.suptitle("Singular values per layer (paper Fig. 8)")
    return fig


def sweep_figure(rows: list[dict], x: str, path: Path, title: str, xlabel: str | None = None,
                 eval_keys: list[str] | None = None) -> None:
    """Plot a sweep: direction similarity and magnitude ratio (largest / rest) against ``x``,
    plus one panel with the ``evaluate`` metrics when there are any."""
    eval_keys = eval_keys or []
    ncols = 3 if eval_keys else 2
    fig, axes = _figure(1, ncols)
    try:
        xs = [float(r[x]) for r in rows]
        ticks = None
    except (TypeError, ValueError):  # categorical values (e.g. a sweep over `variant`)
        xs, ticks = list(range(len(rows))), [str(r[x]) for r in rows]
    panels = [(("dir_top_cos", "largest direction"), ("dir_rest_cos", "other directions"),
               "direction similarity (mean over tasks, modules)"),
              (("dir_top_ratio", "largest direction"), ("dir_rest_ratio", "other directions"),
               "magnitude ratio (mean over tasks, modules)")]
    for ax, (*series, ylabel) in zip(axes[0], panels):
        for key, label in series:
            if any(key in r for r in rows):
                ax.plot(xs, [_num(r.get(key)) for r in rows], marker="o", label=label)
        ax.axhline(1.0, color="0.3", lw=0.8, ls="--")
        ax.set_xlabel(xlabel or x)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if eval_keys:
        ax = axes[0, 2]
        for key in eval_keys:
            ax.plot(xs, [_num(r.get(key)) for r in rows], marker="o", label=key)
        ax.set_xlabel(xlabel or x)
        ax.set_ylabel("evaluation score")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if ticks is not None:
        for ax in axes[0]:
            ax.set_xticks(xs, ticks, rotation=30, ha="right")
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
