"""The registered valuation model: logged as a pyfunc from code, versioned, aliased ``current``, loaded back."""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecoval_ops.keys import write_keys
from ecoval_ops.tracking.store import MlflowStore, store_lock

if TYPE_CHECKING:
    import pyarrow as pa
    from numpy.typing import NDArray

    from ecoval_ops.valuation import EcoVal

__all__ = ["CURRENT_ALIAS", "MODEL_OUTPUTS", "ModelRegistry", "model_description", "model_signature"]

CURRENT_ALIAS = "current"
_MODEL_CODE = Path(__file__).with_name("_model_code.py")

MODEL_OUTPUTS: dict[str, tuple[str, str]] = {
    "ecoval_value": ("values", "double"),
    "ecoval_intrinsic": ("intrinsic", "double"),
    "ecoval_extrinsic": ("extrinsic", "double"),
    "ecoval_cluster": ("clusters", "integer"),
    "ecoval_cluster_value": ("cluster_values", "double"),
    "ecoval_suspect": ("suspect", "boolean"),
}
"""The registered model's output columns: name -> (attribute of the rows' values, MLflow type).

The same names and types as the table's value columns of the same name."""


def model_signature(columns: dict[str, Any], classes: NDArray[Any]) -> Any:
    """The registered model's input and output columns, so MLflow checks what it is given.

    Inputs: the embedding columns (numbers) or the vector column (an array of numbers), and the
    label column in the training labels' type. Outputs: the row-level value columns.
    """
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema, TensorSpec

    label = {"b": "boolean", "i": "long", "u": "long", "f": "double"}.get(classes.dtype.kind, "string")
    embedding = columns["embedding"]
    inputs: list[ColSpec | TensorSpec] = (
        [ColSpec(Array("double"), embedding[0])] if columns["is_vector"] else [ColSpec("double", c) for c in embedding]
    )
    outputs: list[ColSpec | TensorSpec] = [ColSpec(kind, name) for name, (_, kind) in MODEL_OUTPUTS.items()]
    return ModelSignature(inputs=Schema([*inputs, ColSpec(label, columns["label"])]), outputs=Schema(outputs))


def model_description(ecoval: EcoVal, lineage: dict[str, str], config: dict[str, str]) -> str:
    """Markdown description of a registered version: figures, lineage, configuration."""
    from ecoval_ops.reporting.figures import Diagnostics

    fit = Diagnostics.of(ecoval)
    figures = {
        "clusters p": ecoval.n_clusters_,
        "trainings": ecoval.n_trainings_,
        "training rows": int(ecoval.model_.figures()["training_rows"]),
        "U(B)": f"{fit.utility_full:.4g}",
        "U(empty)": f"{fit.utility_empty:.4g}",
        "Gamma_alpha": f"{fit.gamma_alpha:.4g}",
        "Gamma_beta*": f"{fit.gamma_beta:.4g}",
        "gamma": f"{fit.gamma:.4g}",
        "Gammas clipped": fit.gammas_clipped,
        "suspect share": f"{float(ecoval.result_.suspect.mean()):.3f}",
    }
    lines = ["EcoVal valuation model.", "", "**Fit**", ""]
    lines += [f"- {k}: {v}" for k, v in figures.items()]
    lines += ["", "**Lineage**", ""] + [f"- {k}: {v}" for k, v in lineage.items()]
    lines += ["", "**Configuration**", ""] + [f"- {k}: {v}" for k, v in sorted(config.items())]
    return "\n".join(lines)


class ModelRegistry(MlflowStore):
    """The valuation model's versions in the store's model registry."""

    def register(
        self,
        run_id: str,
        ecoval: EcoVal,
        *,
        model_name: str,
        columns: dict[str, Any],
        lineage: dict[str, str],
        config: dict[str, str],
        member_keys: pa.Array | None = None,
    ) -> str:
        """Log the fitted state as a pyfunc model on the run, register it, alias it ``current``.

        ``member_keys`` (the row keys of the state's members, in member order) go with the
        model, so a row's value can be explained by the rows it was compared with.

        The registered model and the version carry a description: the fit's figures, the table
        and version it was fitted on, and the run's configuration; each ``lineage`` entry is
        also a version tag ``ecoval.<name>`` (:meth:`version_tag`). Registering again for the
        same run returns the version registered before.

        Returns:
            The registered model version.
        """
        import mlflow
        from mlflow.exceptions import MlflowException

        client = self._client()
        earlier = self.registered_version(model_name, run_id)
        if earlier is not None:
            with store_lock(self.tracking_uri):
                client.set_registered_model_alias(model_name, CURRENT_ALIAS, earlier)
            return earlier
        with tempfile.TemporaryDirectory() as tmp:
            state = ecoval.save(Path(tmp) / "state")
            columns_file = Path(tmp) / "columns.json"
            columns_file.write_text(json.dumps(columns))
            artifacts = {"state": str(state), "columns": str(columns_file)}
            if member_keys is not None:
                artifacts["member_keys"] = str(write_keys(member_keys, Path(tmp) / "member_keys.parquet"))
            with self._fluent():
                with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
                    # The signature says what the model takes; no example row is stored with it.
                    warnings.filterwarnings("ignore", message=".*input example was not provided")
                    info = mlflow.pyfunc.log_model(
                        name="valuation_model",
                        python_model=str(_MODEL_CODE),
                        artifacts=artifacts,
                        signature=model_signature(columns, ecoval.classes_),
                    )
                # Leaving start_run's block ends the run FINISHED; the valuation is still running.
                client.update_run(run_id, status="RUNNING")
                # Registered through the client as MLflow's fluent register_model does, without
                # the lines that one prints on stderr ("Successfully registered model ...").
                with store_lock(self.tracking_uri):
                    try:
                        client.get_registered_model(model_name)
                    except MlflowException:
                        client.create_registered_model(model_name)
                source = f"models:/{info.model_id}"
                created = client.create_model_version(model_name, source, run_id=run_id, model_id=info.model_id)
        version = str(created.version)
        client.update_model_version(model_name, version, description=model_description(ecoval, lineage, config))
        for name, value in lineage.items():
            client.set_model_version_tag(model_name, version, f"ecoval.{name}", value)
        client.update_registered_model(
            model_name,
            description=f"EcoVal valuation model of {lineage.get('table', '?')}: each refit registers a new version; "
            f"alias '{CURRENT_ALIAS}' names the one nightly runs value new rows with.",
        )
        with store_lock(self.tracking_uri):
            client.set_registered_model_alias(model_name, CURRENT_ALIAS, version)
        return version

    def version_tag(self, model_name: str, version: str, name: str) -> str | None:
        """The lineage entry ``name`` (tag ``ecoval.<name>``) of a registered version; None without it."""
        tag = self._client().get_model_version(model_name, version).tags.get(f"ecoval.{name}")
        return None if tag is None else str(tag)

    def registered_version(self, model_name: str, run_id: str) -> str | None:
        """The newest version of ``model_name`` registered from run ``run_id``, or None."""
        from mlflow.exceptions import MlflowException

        try:
            found = list(self._client().search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'"))
        except MlflowException:
            return None
        return str(max(int(v.version) for v in found)) if found else None

    def load_model(self, model_name: str, version: str) -> Any:
        """The python model of a registered version (what its pyfunc wraps).

        Loaded from the version's logged model through this store, never through the
        process's registry URI, which may name another store.

        Raises:
            MlflowException: no such model version.
        """
        import mlflow

        source = self._client().get_model_version(model_name, version).source
        with self._fluent():
            return mlflow.pyfunc.load_model(source).unwrap_python_model()

    def load_current(self, model_name: str) -> tuple[EcoVal, str] | None:
        """The valuation model with alias ``current`` and its version, or None if there is none."""
        from mlflow.exceptions import MlflowException

        try:
            version = str(self._client().get_model_version_by_alias(model_name, CURRENT_ALIAS).version)
        except MlflowException:
            return None
        return self.load_model(model_name, version).ecoval, version
