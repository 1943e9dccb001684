"""PNG plots of a KAN: the network diagram, one layer's edges, the loss curve.

matplotlib's object API on an Agg canvas (no pyplot, no global state), so plots can
be drawn from worker threads. Every function returns PNG bytes; the image size is
figsize * dpi pixels (figsize is computed from the network and can be overridden).
"""
from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kanmodel.pruning import importance
from kanmodel.symbolic.auto import edge_curves

DPI = 100
MAX_INSETS = 120          # beyond this many live edges, edges are drawn as lines only
MIN_ALPHA = 0.08


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi)
    return buffer.getvalue()


def network_figsize(model) -> tuple[float, float]:
    """Default size (inches) of plot_network: 0.9 inch per edge of the layer with the
    most edges (every edge has its own slot), 2.4 inches per layer."""
    most_edges = max(layer.in_features * layer.out_features for layer in model.layers)
    return (min(30.0, max(4.0, 0.9 * most_edges + 1.0)), 2.4 * len(model.layers) + 1.2)


def _model_inputs(model, X):
    return None if X is None else np.asarray(X, dtype=np.float64)


def plot_network(model, X=None, names=None, output_names=None, edge_functions=None,
                 figsize: tuple[float, float] | None = None, dpi: int = DPI) -> bytes:
    """The network: nodes, and on every live edge a small plot of its activation,
    faded by the edge's importance (importance needs X; without X all are opaque).

    X: raw model inputs (batch, width[0]) for importance and edge ranges.
    names / output_names: labels of the inputs / outputs.
    edge_functions: per layer {(j, i): function name} (e.g. Formula.edge_functions);
    those edges get their function written next to them.
    """
    X = _model_inputs(model, X)
    names = list(names) if names is not None else [f"x{i}" for i in range(model.width[0])]
    output_names = list(output_names) if output_names is not None else \
        ([f"y{j}" for j in range(model.width[-1])] if model.width[-1] > 1 else ["y"])
    if len(names) != model.width[0] or len(output_names) != model.width[-1]:
        raise ValueError(f"names: expected {model.width[0]} input and {model.width[-1]} output names")
    edge_imp = importance(model, X)[0] if X is not None else None
    curves = edge_curves(model, X, n_points=60)
    fig = Figure(figsize=figsize or network_figsize(model), dpi=dpi)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    n_levels = len(model.width)
    bottom, top = 0.1, 0.9

    def level_y(level: int) -> float:
        return bottom + (top - bottom) * level / (n_levels - 1)

    def node_x(level: int, index: int) -> float:
        n = model.width[level]
        return (index + 0.5) / n

    live = sum(int(layer.mask.sum()) for layer in model.layers)
    draw_insets = live <= MAX_INSETS
    for index, layer in enumerate(model.layers):
        mask = layer.mask.detach().cpu().numpy()
        xs, acts = curves[index]
        scores = edge_imp[index].cpu().numpy() if edge_imp is not None else np.ones_like(mask)
        peak = max(float(scores.max()), 1e-30)
        # every edge has its own slot between the two levels: edges (i, j) left to right
        slots = layer.in_features * layer.out_features
        slot_w = 1.0 / slots
        inset_w = min(0.7 * slot_w, 0.14)
        inset_h = min(0.35 * (top - bottom) / (n_levels - 1), 0.16)
        y_mid = 0.5 * (level_y(index) + level_y(index + 1))
        for i in range(layer.in_features):
            for j in range(layer.out_features):
                if mask[j, i] == 0:
                    continue
                alpha = float(np.clip(scores[j, i] / peak, MIN_ALPHA, 1.0))
                cx = (i * layer.out_features + j + 0.5) * slot_w
                x0, y0 = node_x(index, i), level_y(index)
                x1, y1 = node_x(index + 1, j), level_y(index + 1)
                low, high = (y_mid - inset_h / 2, y_mid + inset_h / 2) if draw_insets else (y_mid, y_mid)
                ax.plot([x0, cx], [y0, low], color="black", lw=1.0, alpha=alpha, zorder=1)
                ax.plot([cx, x1], [high, y1], color="black", lw=1.0, alpha=alpha, zorder=1)
                label = (edge_functions[index].get((j, i)) if edge_functions and index < len(edge_functions)
                         else None)
                if draw_insets:
                    inset = fig.add_axes([cx - inset_w / 2, low, inset_w, inset_h])
                    inset.plot(xs[:, i], acts[:, j, i], color="tab:purple" if label else "black",
                               lw=1.2, alpha=alpha)
                    inset.set_xticks([])
                    inset.set_yticks([])
                    inset.patch.set_alpha(0.0)
                    for spine in inset.spines.values():
                        spine.set_alpha(alpha)
                if label:
                    ax.text(cx, low - 0.005, label, fontsize=8, color="tab:purple",
                            alpha=max(alpha, 0.5), va="top", ha="center", zorder=3)
    for level, width in enumerate(model.width):
        for index in range(width):
            ax.scatter([node_x(level, index)], [level_y(level)], s=40, color="black", zorder=4)
    for index, name in enumerate(names):
        ax.text(node_x(0, index), level_y(0) - 0.04, name, ha="center", va="top", fontsize=11)
    for index, name in enumerate(output_names):
        ax.text(node_x(n_levels - 1, index), level_y(n_levels - 1) + 0.04, name,
                ha="center", va="bottom", fontsize=11)
    return _png(fig)


def layer_figsize(model, layer: int) -> tuple[float, float]:
    """Default size (inches) of plot_layer: 2 x 1.6 inches per edge."""
    kan_layer = model.layers[layer]
    return (2.0 * kan_layer.in_features + 0.4, 1.6 * kan_layer.out_features + 0.6)


def plot_layer(model, layer: int, X=None, figsize: tuple[float, float] | None = None,
               dpi: int = DPI) -> bytes:
    """A grid of one layer's edge activations: row j = output j, column i = input i.

    X: raw model inputs, for each input's range (default: the spline domains).
    Pruned edges are shown as empty panels marked "pruned".
    """
    if not 0 <= layer < len(model.layers):
        raise ValueError(f"layer must be in [0, {len(model.layers) - 1}], got {layer}")
    kan_layer = model.layers[layer]
    xs, acts = edge_curves(model, _model_inputs(model, X), n_points=120)[layer]
    mask = kan_layer.mask.detach().cpu().numpy()
    fig = Figure(figsize=figsize or layer_figsize(model, layer), dpi=dpi)
    axes = fig.subplots(kan_layer.out_features, kan_layer.in_features, squeeze=False)
    for j in range(kan_layer.out_features):
        for i in range(kan_layer.in_features):
            ax = axes[j][i]
            if mask[j, i] == 0:
                ax.text(0.5, 0.5, "pruned", ha="center", va="center", transform=ax.transAxes, color="gray")
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                ax.plot(xs[:, i], acts[:, j, i], color="tab:blue", lw=1.3)
                ax.tick_params(labelsize=6)
            ax.set_title(f"in {i} -> out {j}", fontsize=7)
    fig.suptitle(f"layer {layer}: edge activations (standardised inputs)", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def plot_loss(history: list[dict], figsize: tuple[float, float] = (6.0, 3.6), dpi: int = DPI) -> bytes:
    """Training (and validation) loss per step, log scale, grid-stage boundaries
    marked and labelled with the stage's grid size. history: FitResult.history."""
    if not history:
        raise ValueError("plot_loss: history is empty")
    steps = np.arange(1, len(history) + 1)
    train = np.array([h["train_loss"] for h in history], dtype=float)
    val = np.array([np.nan if h.get("val_loss") is None else h["val_loss"] for h in history], dtype=float)
    fig = Figure(figsize=figsize, dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    positive = lambda v: np.where(v > 0, v, np.nan)  # noqa: E731 - log scale cannot show 0
    ax.plot(steps, positive(train), label="train", color="tab:blue", lw=1.2)
    if np.isfinite(val).any():
        ax.plot(steps, positive(val), label="validation", color="tab:orange", lw=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    stages = [h["stage"] for h in history]
    for position in range(len(history)):
        if position == 0 or stages[position] != stages[position - 1]:
            if position:
                ax.axvline(position + 0.5, color="gray", ls="--", lw=0.8)
            ax.text(position + 1, 1.0, f" grid {history[position]['grid']}", transform=ax.get_xaxis_transform(),
                    fontsize=7, va="top", ha="left", color="gray")
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    return _png(fig)
