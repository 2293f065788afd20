"""Input checks shared by EcoVal and the baselines (method spec section 1).

Every check raises :class:`~ecoval_ops.exceptions.InvalidInputError` with a message that says
what was expected and what was found, so a nightly job fails with one clear line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ecoval_ops.exceptions import InvalidInputError

__all__ = ["LabelledData", "check_features", "check_labels", "check_training_data", "encode_labels"]


@dataclass(frozen=True)
class LabelledData:
    """Validated training and validation arrays with labels encoded as ``0..K-1``.

    Attributes:
        X_train: ``(n, d)`` float64 training features.
        y_train: ``(n,)`` int64 class codes.
        X_val: ``(m, d)`` float64 validation features.
        y_val: ``(m,)`` int64 class codes.
        classes: ``(K,)`` original labels, ``classes[code]`` is the label of a code.
    """

    X_train: NDArray[np.float64]
    y_train: NDArray[np.int64]
    X_val: NDArray[np.float64]
    y_val: NDArray[np.int64]
    classes: NDArray[np.generic]

    @property
    def n_classes(self) -> int:
        """Number of classes K seen in training."""
        return int(self.classes.shape[0])


def check_features(X: ArrayLike, name: str, *, n_features: int | None = None) -> NDArray[np.float64]:
    """Return ``X`` as a finite 2-D float64 array.

    Args:
        X: ``(n, d)`` array-like of numbers.
        name: how the array is called in error messages.
        n_features: the expected ``d``; ``None`` accepts any width.

    Raises:
        InvalidInputError: not 2-D, empty, non-numeric, wrong width, or containing NaN/inf.
    """
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"{name} must be numeric; could not convert it to float: {e}") from e
    if arr.ndim != 2:
        raise InvalidInputError(f"{name} must be 2-D (rows x features); found shape {arr.shape}")
    if arr.shape[0] == 0:
        raise InvalidInputError(f"{name} is empty: expected at least 1 row, found 0")
    if arr.shape[1] == 0:
        raise InvalidInputError(f"{name} has no feature columns: shape {arr.shape}")
    if n_features is not None and arr.shape[1] != n_features:
        raise InvalidInputError(f"{name} has {arr.shape[1]} features; expected {n_features} as in training")
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise InvalidInputError(
            f"{name} has {int(bad.sum())} NaN or infinite values in {rows.size} rows (first row index {int(rows[0])})"
        )
    return arr


def check_labels(y: ArrayLike, name: str, *, n_rows: int) -> NDArray[np.generic]:
    """Return ``y`` as a 1-D array of ``n_rows`` non-missing labels.

    Raises:
        InvalidInputError: wrong shape or length, or missing (NaN/None) labels.
    """
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise InvalidInputError(f"{name} must be 1-D; found shape {arr.shape}")
    if arr.shape[0] != n_rows:
        raise InvalidInputError(f"{name} has {arr.shape[0]} labels for {n_rows} rows")
    if arr.dtype == object:
        missing = np.array([v is None or (isinstance(v, float) and np.isnan(v)) for v in arr])
    elif np.issubdtype(arr.dtype, np.floating):
        missing = np.isnan(arr)
        if not missing.any() and not np.all(arr == np.round(arr)):
            raise InvalidInputError(f"{name} holds non-integer floats; class labels must be integers or strings")
    else:
        missing = np.zeros(arr.shape[0], dtype=bool)
    if missing.any():
        rows = np.flatnonzero(missing)
        raise InvalidInputError(f"{name} has {rows.size} missing labels (first row index {int(rows[0])})")
    return _typed_labels(arr) if arr.dtype == object else arr


def _typed_labels(arr: NDArray[np.generic]) -> NDArray[np.generic]:
    """Object labels of one Python type as a typed array: strings, booleans or integers.

    Tables hand labels over as object arrays (pandas and Arrow strings, nullable integers); a
    typed array compares, sorts and saves without pickle. Mixed types stay objects.
    """
    kinds = {type(v) for v in arr}
    if kinds <= {str, np.str_}:
        return arr.astype(str)
    if kinds <= {bool, np.bool_}:
        return arr.astype(bool)
    if all(issubclass(k, (int, np.integer)) and not issubclass(k, (bool, np.bool_)) for k in kinds):
        return arr.astype(np.int64)
    return arr


def encode_labels(y: NDArray[np.generic], classes: NDArray[np.generic], name: str) -> NDArray[np.int64]:
    """Map labels to codes ``0..K-1`` of ``classes``.

    Raises:
        InvalidInputError: a label that is not among ``classes``.
    """
    codes = np.searchsorted(classes, y)
    codes = np.clip(codes, 0, classes.shape[0] - 1)
    unseen = classes[codes] != y
    if np.any(unseen):
        labels = np.unique(y[unseen])
        shown = ", ".join(repr(v.item() if hasattr(v, "item") else v) for v in labels[:5])
        raise InvalidInputError(
            f"{name} has {int(np.sum(unseen))} rows with labels unseen in training: {shown}"
            f"{' ...' if labels.size > 5 else ''} (training classes: {classes.size})"
        )
    return codes.astype(np.int64)


def check_training_data(X_train: ArrayLike, y_train: ArrayLike, X_val: ArrayLike, y_val: ArrayLike) -> LabelledData:
    """Validate a training and a validation split and encode their labels.

    Raises:
        InvalidInputError: any problem of :func:`check_features` or :func:`check_labels`, fewer
            than two classes in training, or validation labels unseen in training.
    """
    Xt = check_features(X_train, "X_train")
    yt = check_labels(y_train, "y_train", n_rows=Xt.shape[0])
    Xv = check_features(X_val, "X_val", n_features=Xt.shape[1])
    yv = check_labels(y_val, "y_val", n_rows=Xv.shape[0])
    try:
        classes = np.unique(yt)
    except TypeError as e:
        raise InvalidInputError(f"y_train mixes label types that cannot be ordered: {e}") from e
    if classes.size < 2:
        raise InvalidInputError(f"y_train has a single class ({classes[0]!r}); valuation needs at least 2 classes")
    return LabelledData(
        X_train=Xt,
        y_train=encode_labels(yt, classes, "y_train"),
        X_val=Xv,
        y_val=encode_labels(yv, classes, "y_val"),
        classes=classes,
    )
