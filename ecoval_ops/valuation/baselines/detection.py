"""The detection baselines of method spec section 7: out-of-bag accuracy, neighbour agreement, confident learning.

- :func:`data_oob`: out-of-bag accuracy of each row over a bagged ensemble (Kwon and Zou, 2023);
- :func:`knn_agreement`: the share of a row's nearest neighbours that carry its label;
- :func:`confident_learning`: the self-confidence of a row's label under cross-validated probabilities.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.valuation._inputs import check_training_data
from ecoval_ops.valuation.clustering import FeatureSpace
from ecoval_ops.valuation.result import ValuationResult

__all__ = ["confident_learning", "data_oob", "knn_agreement"]


def data_oob(
    X_train: ArrayLike,
    y_train: ArrayLike,
    X_val: ArrayLike,
    y_val: ArrayLike,
    *,
    n_estimators: int = 200,
    seed: int = 0,
) -> ValuationResult:
    """Data-OOB: each row's mean out-of-bag accuracy over bootstrap decision trees.

    ``v_i = mean_{b: i not in bootstrap b} 1[T_b(x_i) = y_i]`` with ``T_b`` a decision tree
    (``max_features="sqrt"``, a random forest's trees) fitted on bootstrap sample b. The
    validation split is not used (Data-OOB needs none) but is checked like everywhere else.
    A row that is in every bootstrap gets the mean value of the others.
    """
    from sklearn.ensemble import BaggingClassifier
    from sklearn.tree import DecisionTreeClassifier

    data = check_training_data(X_train, y_train, X_val, y_val)
    if n_estimators < 1:
        raise InvalidInputError(f"n_estimators must be at least 1; found {n_estimators}")
    n = data.X_train.shape[0]
    bag = BaggingClassifier(
        DecisionTreeClassifier(max_features="sqrt"), n_estimators=n_estimators, bootstrap=True, random_state=seed
    ).fit(data.X_train, data.y_train)
    correct = np.zeros(n)
    counted = np.zeros(n)
    for tree, rows, features in zip(bag.estimators_, bag.estimators_samples_, bag.estimators_features_, strict=True):
        oob = np.ones(n, dtype=bool)
        oob[rows] = False
        predicted = bag.classes_[tree.predict(data.X_train[np.ix_(oob, features)]).astype(np.int64)]
        correct[oob] += predicted == data.y_train[oob]
        counted[oob] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        values = correct / counted
    seen = counted > 0
    values[~seen] = values[seen].mean() if seen.any() else 0.0
    return ValuationResult(values, method="data_oob", n_trainings=n_estimators)


def knn_agreement(
    X_train: ArrayLike,
    y_train: ArrayLike,
    X_val: ArrayLike,
    y_val: ArrayLike,
    *,
    k: int = 20,
) -> ValuationResult:
    """The share of a row's ``k`` nearest training rows that carry its label.

    ``v_i = (1/k) sum_{j in N_k(i)} 1[y_j = y_i]``, with ``N_k(i)`` the k nearest other training
    rows in the standardised features. No training: the vote a user writes first, and the floor
    a valuation's noise detection has to clear. The validation split is only checked.
    """
    from sklearn.neighbors import NearestNeighbors

    data = check_training_data(X_train, y_train, X_val, y_val)
    if k < 1:
        raise InvalidInputError(f"k must be at least 1; found {k}")
    X = FeatureSpace.fit(data.X_train, max_dims=None).standardise(data.X_train)
    n = X.shape[0]
    k = min(k, n - 1)
    found = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X, return_distance=False)
    # A row is its own nearest neighbour unless it has exact duplicates: drop it wherever it is.
    own = found == np.arange(n)[:, None]
    own[:, -1] |= ~own.any(axis=1)
    neighbours = found[~own].reshape(n, k)
    values = (data.y_train[neighbours] == data.y_train[:, None]).mean(axis=1)
    return ValuationResult(values, method="knn_agreement", n_trainings=0)


def confident_learning(
    X_train: ArrayLike,
    y_train: ArrayLike,
    X_val: ArrayLike,
    y_val: ArrayLike,
    *,
    learner: str = "random_forest",
    n_estimators: int = 200,
    folds: int = 5,
    seed: int = 0,
) -> ValuationResult:
    """The label-quality score of cleanlab (confident learning) from out-of-fold probabilities.

    ``v_i = p_oof(y_i | x_i)`` (cleanlab's ``self_confidence``), the probabilities from
    ``folds``-fold cross-validation of a random forest of ``n_estimators`` trees (its strongest
    configuration on these protocols) or of logistic regression (``learner="logistic"``, C = 1
    on standardised features: EcoVal's learner). ``folds`` models are trained. The validation
    split is only checked. Needs ``cleanlab`` (the ``dev`` extra; benchmarks only).
    """
    from cleanlab.rank import get_label_quality_scores
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    data = check_training_data(X_train, y_train, X_val, y_val)
    if learner not in ("random_forest", "logistic"):
        raise InvalidInputError(f"learner must be 'random_forest' or 'logistic'; found {learner!r}")
    _, y = np.unique(data.y_train, return_inverse=True)
    X = FeatureSpace.fit(data.X_train, max_dims=None).standardise(data.X_train)
    model = (
        RandomForestClassifier(n_estimators=n_estimators, random_state=seed)
        if learner == "random_forest"
        else LogisticRegression(C=1.0, max_iter=1000)
    )
    folds = min(folds, int(np.bincount(y).min()))
    if folds < 2:
        raise InvalidInputError("confident learning needs at least 2 rows of every class")
    probabilities = cross_val_predict(
        model, X, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed), method="predict_proba"
    )
    scores = get_label_quality_scores(y, probabilities, method="self_confidence")
    return ValuationResult(np.asarray(scores, dtype=np.float64), method="cleanlab", n_trainings=folds)
