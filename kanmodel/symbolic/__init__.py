"""Symbolic formula extraction: function library, edge fits, composition, refit."""
from kanmodel.symbolic.auto import auto_symbolic, edge_candidates, suggest
from kanmodel.symbolic.edge_fit import EdgeFit, fit_edge
from kanmodel.symbolic.formula import Formula
from kanmodel.symbolic.library import DEFAULT_LIBRARY, LIBRARY

__all__ = ["auto_symbolic", "edge_candidates", "suggest", "EdgeFit", "fit_edge", "Formula",
           "DEFAULT_LIBRARY", "LIBRARY"]
