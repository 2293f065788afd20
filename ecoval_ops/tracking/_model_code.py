"""MLflow "model from code" file of the registered valuation model.

MLflow executes this file when it loads the model (it is never imported by ecoval_ops), so the
model is rebuilt from code and from the saved arrays + JSON state: nothing is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from ecoval_ops.keys import read_keys
from ecoval_ops.tracking.registry import MODEL_OUTPUTS
from ecoval_ops.valuation import EcoVal

_DTYPES = {"double": np.float64, "integer": np.int32, "boolean": np.bool_}
"""The NumPy type of each MLflow type of :data:`MODEL_OUTPUTS`."""


class EcoValPyfunc(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
    """Values a DataFrame of new labelled rows against the fitted state, out of sample."""

    def load_context(self, context: Any) -> None:
        self.ecoval = EcoVal.load(context.artifacts["state"])
        self.columns = json.loads(Path(context.artifacts["columns"]).read_text())
        keys = context.artifacts.get("member_keys")
        self.member_keys = None if keys is None else read_keys(keys)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        embedding = self.columns["embedding"]
        if self.columns["is_vector"]:
            X = np.stack([np.asarray(v, dtype=float) for v in model_input[embedding[0]]])
        else:
            X = model_input[embedding].to_numpy(dtype=float)
        rows = self.ecoval.value_rows(X, model_input[self.columns["label"]].to_numpy())
        return pd.DataFrame(
            {
                name: np.asarray(getattr(rows, attribute), dtype=_DTYPES[kind])
                for name, (attribute, kind) in MODEL_OUTPUTS.items()
            }
        )


mlflow.models.set_model(EcoValPyfunc())
