"""Sparsity penalty on edge activations (PyKAN's lamb, lamb_l1, lamb_entropy)."""
from __future__ import annotations

import torch


def sparsity_penalty(edge_activations: list[torch.Tensor], lamb_l1: float,
                     lamb_entropy: float) -> torch.Tensor:
    """sum over layers of lamb_l1 * |A|_1 + lamb_entropy * H(A / |A|_1), where
    A (out, in) = mean over the batch of |phi[j, i](x_i)| per edge.

    The L1 term shrinks edges; the entropy term pushes the remaining magnitude onto
    few edges, which is what makes pruning and formula extraction work.
    edge_activations: one (batch, out, in) tensor per layer.
    """
    total = edge_activations[0].new_zeros(())
    for acts in edge_activations:
        magnitude = acts.abs().mean(0)
        l1 = magnitude.sum()
        share = magnitude / (l1 + 1e-12)
        entropy = -(share * torch.log(share + 1e-12)).sum()
        total = total + lamb_l1 * l1 + lamb_entropy * entropy
    return total
