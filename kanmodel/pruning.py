"""Edge and node importance from activations on data, and pruning.

Importance flows back from the outputs: every output node has importance 1; an
edge gets its target node's importance times its share of the variation arriving
at that node (std of its activation over the data, divided by the sum of the stds
of all edges into the node); a node's importance is the sum over its outgoing edges.
So an edge is unimportant when it moves its node little, or when the node it feeds
matters little downstream.

Pruning an edge masks it (exactly zero) and moves the edge's mean activation into
the bias of its target node, so constant offsets survive. A hidden node whose
importance falls below the threshold is removed with all its edges (its mean
contribution to the next layer also goes into that layer's biases), so the pruned
model is smaller.
"""
from __future__ import annotations

import torch
from torch import nn

from kanmodel.model import KAN

DEFAULT_THRESHOLD = 1e-2


@torch.no_grad()
def importance(model: KAN, X) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Edge scores [(out, in)] per layer and node scores [(width[l],)] per level.

    Both in [0, 1]-ish units (output nodes have importance 1). X: raw inputs (batch, in).
    """
    acts = model.activations(X)
    spread = [edges.std(0, unbiased=False) if len(edges) > 1 else torch.zeros_like(edges[0])
              for _, edges in acts]
    nodes = [None] * (len(model.layers) + 1)
    edges_imp = [None] * len(model.layers)
    nodes[-1] = torch.ones(model.width[-1], dtype=spread[-1].dtype)
    for index in range(len(model.layers) - 1, -1, -1):
        s = spread[index]
        share = s / (s.sum(dim=1, keepdim=True) + 1e-30)
        edges_imp[index] = nodes[index + 1].unsqueeze(1) * share
        nodes[index] = edges_imp[index].sum(0)
    return edges_imp, nodes


@torch.no_grad()
def prune(model: KAN, X, threshold: float = DEFAULT_THRESHOLD) -> KAN:
    """A pruned copy of model: edges with importance < threshold masked; hidden nodes
    with importance < threshold, or left without a live edge in or out, removed.
    Every removed edge's mean activation on X is folded into its target's bias.

    X: raw inputs (batch, in), the data the importance is measured on (use training
    data). Inputs and outputs of the model are never removed. The original model is
    not modified.
    """
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    X = model.check_input(X)
    if len(X) == 0:
        raise ValueError("prune needs at least one row of X")
    edge_imp, node_imp = importance(model, X)
    acts = model.activations(X)
    n_layers = len(model.layers)

    # decide: edges to mask, then hidden nodes to keep. A hidden node stays when it is
    # important and still has a live edge in and a live edge out (otherwise it is a
    # constant, which the biases absorb).
    drops = [(edge_imp[index] < threshold) | (layer.mask == 0) for index, layer in enumerate(model.layers)]
    keep = [torch.arange(model.width[0])]
    for level in range(1, n_layers):
        fed = (~drops[level - 1]).any(dim=1)
        feeds = (~drops[level]).any(dim=0)
        alive = ((node_imp[level] >= threshold) & fed & feeds).nonzero().flatten()
        if len(alive) == 0:  # keep the most important node so the network stays connected
            alive = node_imp[level].argmax().reshape(1)
        keep.append(alive)
    keep.append(torch.arange(model.width[-1]))

    new_width = [len(k) for k in keep]
    pruned = KAN(new_width, grid=model.grid_size, k=model.k, grid_range=model.grid_range,
                 grid_eps=model.grid_eps, base=model.base, seed=model.seed, task=model.task)
    pruned = pruned.to(dtype=model.in_shift.dtype, device=model.in_shift.device)
    for name in ("in_shift", "in_scale", "out_shift", "out_scale"):
        getattr(pruned, name).copy_(getattr(model, name))

    for index, (old, new) in enumerate(zip(model.layers, pruned.layers)):
        rows, cols = keep[index + 1], keep[index]
        edges = acts[index][1]                      # (batch, out, in)
        drop = drops[index].to(old.mask.dtype)
        # every dropped edge (and every edge from a removed node) keeps its mean as bias
        removed_cols = torch.ones(old.in_features, dtype=torch.bool)
        removed_cols[cols] = False
        drop[:, removed_cols] = 1.0
        dropped = old.mask * drop
        offset = (edges.mean(0) * dropped).sum(1)   # (out,)
        new.coef = nn.Parameter(old.coef[rows][:, cols].clone())
        new.set_knots(old.knots[cols].clone(), old.uniform)
        new.base_weight.copy_(old.base_weight[rows][:, cols])
        new.spline_weight.copy_(old.spline_weight[rows][:, cols])
        new.bias.copy_((old.bias + offset)[rows])
        new.mask.copy_((old.mask * (1 - drop))[rows][:, cols])
    return pruned
