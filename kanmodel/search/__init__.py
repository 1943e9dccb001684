"""Direct search for compact formulas on the data (target transforms, sparse and
rational fits over a term dictionary), see `recipe`."""
from kanmodel.search.recipe import Candidate, choose, pareto_front, search

__all__ = ["Candidate", "choose", "pareto_front", "search"]
