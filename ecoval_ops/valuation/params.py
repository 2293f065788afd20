"""EcoVal's parameters as declarative rules, checked before any work.

As scikit-learn's ``_parameter_constraints``: a typo is one
:class:`~ecoval_ops.exceptions.InvalidInputError` naming the class, the parameter and the
allowed values, before a model is trained.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.valuation.neighbours import SEARCHES
from ecoval_ops.valuation.protocols import Clusterer, ProductionFunction, Propagator

__all__ = ["PARAM_RULES", "check_params"]


def _integer(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _positive_int(v: Any) -> bool:
    return _integer(v) and bool(v >= 1)


def _learner(v: Any) -> bool:
    if isinstance(v, str):
        return v in ("logistic", "mlp")
    return hasattr(v, "predict_proba_masked") or (hasattr(v, "fit") and hasattr(v, "predict_proba"))


PARAM_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "n_clusters": (lambda v: v is None or (_positive_int(v) and v >= 2), "None or an integer >= 2"),
    "budget": (lambda v: v is None or _positive_int(v), "None or a positive integer"),
    "pairwise": (lambda v: isinstance(v, bool), "True or False"),
    "utility": (lambda v: v in ("log_likelihood", "accuracy"), "one of 'log_likelihood', 'accuracy'"),
    "learner": (
        _learner,
        "one of 'logistic', 'mlp', a scikit-learn classifier (fit/predict_proba) or an object with "
        "predict_proba_masked",
    ),
    "k_neighbors": (_positive_int, "a positive integer"),
    "vote_neighbors": (_positive_int, "a positive integer"),
    "halo_clusters": (lambda v: _positive_int(v) or (_integer(v) and v == 0), "an integer >= 0"),
    "prior_weight": (lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v >= 0, "finite and >= 0"),
    "c_kappa": (lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v >= 0, "finite and >= 0"),
    "seeds": (_positive_int, "a positive integer"),
    "seed": (_integer, "an integer"),
    "device": (lambda v: v in ("auto", "cpu", "cuda"), "one of 'auto', 'cpu', 'cuda'"),
    "max_train_rows": (_positive_int, "a positive integer"),
    "max_reference_rows": (lambda v: _integer(v) and v >= 4, "an integer >= 4"),
    "min_cluster_frac": (lambda v: isinstance(v, (int, float)) and 0 <= v < 0.5, "in [0, 0.5)"),
    "pca_dims": (_positive_int, "a positive integer"),
    "clusterer": (lambda v: v is None or isinstance(v, Clusterer), "None or a Clusterer (fit_predict)"),
    "production": (lambda v: v is None or isinstance(v, ProductionFunction), "None or a ProductionFunction (fit)"),
    "propagator": (lambda v: v is None or isinstance(v, Propagator), "None or a Propagator (fit)"),
    "shrinkage": (lambda v: isinstance(v, bool), "True or False"),
    "empirical_bayes": (lambda v: isinstance(v, bool), "True or False"),
    "neighbour_search": (lambda v: v in SEARCHES, "one of 'exact', 'approx', 'auto'"),
}
"""Each parameter's test and what it must be, checked at the start of ``prepare`` and ``fit``."""


def check_params(owner: str, values: Mapping[str, Any]) -> None:
    """Check each parameter of ``values`` that :data:`PARAM_RULES` knows.

    Raises:
        InvalidInputError: ``"<owner>: <name> must be <allowed>; found <value>"``.
    """
    for name, (valid, expected) in PARAM_RULES.items():
        if name in values and not valid(values[name]):
            raise InvalidInputError(f"{owner}: {name} must be {expected}; found {values[name]!r}")
