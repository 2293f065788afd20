"""Resolving EcoVal's ``learner`` parameter, and scikit-learn classifiers as learners.

``"logistic"`` and ``"mlp"`` name the batched torch learners of :mod:`.trainer`; any
scikit-learn classifier is wrapped by :class:`SklearnLearner` and trained one model at a time
(the slow path, for comparisons with a given model). ``"trees"`` names one of them, gradient
boosted trees (:func:`boosted_trees`), for tabular rows whose labels a linear model fits
poorly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.valuation.trainer import DeviceName, MLPClassifier, SoftmaxRegression

__all__ = ["LearnerName", "SklearnLearner", "boosted_trees", "learner_from_name", "trains_torch"]

LearnerName = Literal["logistic", "mlp", "trees"]
"""The learners by name: the batched torch learners and boosted trees."""

TREE_ROUNDS = 60
"""Boosting rounds of ``"trees"``, a fixed number: every training of the game costs the same."""


class SklearnLearner:
    """Any scikit-learn classifier (``fit`` / ``predict_proba``), one model per mask.

    The estimator is cloned for every mask and never modified. ``random_state`` is set to the
    seed when the estimator has one. A mask with a single class predicts that class. Each model
    fits on one OpenMP thread: the trainings are small, so a thread per core wins nothing alone
    and spins against another valuation on the same cores (two ``"trees"`` valuations side by
    side on 2 cores took 74 s each, and take 5.3-5.7 s; ``benchmarks/NOTES.md``).

    Args:
        estimator: an unfitted scikit-learn classifier.
    """

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def predict_proba_masked(
        self,
        X: NDArray[np.float64],
        y: NDArray[np.int64],
        masks: NDArray[np.bool_],
        X_val: NDArray[np.float64],
        *,
        n_classes: int,
        seed: int,
    ) -> NDArray[np.float64]:
        """Same contract as :meth:`SoftmaxRegression.predict_proba_masked`."""
        from threadpoolctl import threadpool_limits

        out = np.zeros((masks.shape[0], X_val.shape[0], n_classes), dtype=np.float64)
        with threadpool_limits(limits=1, user_api="openmp"):
            for r, mask in enumerate(masks):
                out[r] = self._fit_predict(X[mask], y[mask], X_val, n_classes, seed)
        return out

    def _fit_predict(
        self,
        X: NDArray[np.float64],
        y: NDArray[np.int64],
        X_val: NDArray[np.float64],
        n_classes: int,
        seed: int,
    ) -> NDArray[np.float64]:
        from sklearn.base import clone

        proba = np.zeros((X_val.shape[0], n_classes), dtype=np.float64)
        present = np.unique(y)
        if present.size == 1:
            proba[:, present[0]] = 1.0
            return proba
        model = clone(self.estimator)
        if "random_state" in model.get_params():
            model.set_params(random_state=seed)
        model.fit(X, y)
        proba[:, np.asarray(model.classes_, dtype=np.int64)] = model.predict_proba(X_val)
        return proba


def boosted_trees() -> SklearnLearner:
    """``"trees"``: scikit-learn's histogram gradient boosting, ``TREE_ROUNDS`` rounds, no early stop.

    On tabular sets whose label a linear model fits poorly the trainings then measure the
    clusters with a model that fits them: detection AUROC gains 0.001-0.007 over ``"logistic"``
    on P1, P3 and X1's three sets (seeds 0-4 and 5-9), while the 2-means F1 falls and removal
    moves both ways (``benchmarks/NOTES.md``), so it is an option, not the default. Each
    training is a scikit-learn fit, one at a time, on the CPU (a 1,000-row valuation 5-6 s
    against 1.7 s).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier  # heavy to import; DAG parsing must not pay it

    return SklearnLearner(HistGradientBoostingClassifier(max_iter=TREE_ROUNDS, early_stopping=False))


def learner_from_name(
    learner: str | Any, device: DeviceName
) -> SoftmaxRegression | MLPClassifier | SklearnLearner | Any:
    """Resolve EcoVal's ``learner`` parameter to an object with ``predict_proba_masked``.

    ``"logistic"`` and ``"mlp"`` name the batched torch learners, ``"trees"`` boosted trees
    (:func:`boosted_trees`); an object that already has
    ``predict_proba_masked`` is used as it is; any other object is taken for a scikit-learn
    classifier and trained one model at a time.
    """
    if isinstance(learner, str):
        factories: dict[str, Callable[[], Any]] = {
            "logistic": lambda: SoftmaxRegression(device=device),
            "mlp": lambda: MLPClassifier(device=device),
            "trees": boosted_trees,
        }
        if learner not in factories:
            raise ValueError(f"unknown learner {learner!r}; expected one of {list(factories)} or a classifier instance")
        return factories[learner]()
    if hasattr(learner, "predict_proba_masked"):
        return learner
    if not (hasattr(learner, "fit") and hasattr(learner, "predict_proba")):
        raise ValueError(
            f"learner {type(learner).__name__} has no fit/predict_proba; pass 'logistic', 'mlp', 'trees', "
            "a scikit-learn classifier or an object with predict_proba_masked"
        )
    return SklearnLearner(learner)


def trains_torch(learner: str | Any) -> bool:
    """Whether EcoVal's ``learner`` may train torch models: any that does not resolve to scikit-learn."""
    return not isinstance(learner_from_name(learner, "auto"), SklearnLearner)
