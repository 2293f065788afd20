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
from ecoval_ops.valuation import EcoVal


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
                "ecoval_value": rows.values,
                "ecoval_intrinsic": rows.intrinsic,
                "ecoval_extrinsic": rows.extrinsic,
                "ecoval_cluster": np.asarray(rows.clusters, dtype=np.int32),
                "ecoval_cluster_value": rows.cluster_values,
                "ecoval_suspect": rows.suspect,
            }
        )


mlflow.models.set_model(EcoValPyfunc())
