from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest
from annotated_types import Ge

from ecoval_ops.config import load_config
from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.identifiers import scrub_uri


def test_flags_win_over_yaml_and_paths_are_normalised(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("table: ./lake/train\nkey: row_id\nlabel: y\nfeatures: a,b\nseed: 3\nrefit: never\n")
    cfg = load_config(cfg_file, seed=7, engine="delta-rs", quiet=None)
    assert str(cfg.source.table) == str((tmp_path / "lake" / "train").resolve())
    assert cfg.source.features == ("a", "b")
    assert (cfg.method.seed, cfg.refit, cfg.engine) == (7, "never", "delta-rs")
    assert cfg.registered_model_name == "ecoval_train"
    assert cfg.tracking_uri == f"sqlite:///{Path.cwd() / 'mlflow.db'}"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"label": "label; DROP TABLE x"}, "not a plain identifier"),
        ({"features": "a,b c"}, "not a plain identifier"),
        ({"features": None, "embedding_col": None}, "exactly one of features, embedding_col or image_col"),
        ({"embedding_col": "emb"}, "exactly one of"),
        ({"validation_fraction": 1.5}, "validation_fraction"),
        ({"refit": "sometimes"}, "refit"),
        ({"n_clusters": 1}, "n_clusters"),
        ({"pairwise": "perhaps"}, "pairwise"),
        ({"unknown_flag": 1}, "unknown_flag"),
        ({"key": "label"}, "must be distinct"),
        ({"values_table": "/tmp/t"}, "values_table must be a table of its own"),
        ({"alert_drift": 1.5}, "alert_drift"),
    ],
)
def test_invalid_configuration_is_one_clear_error(flags, message) -> None:
    base = {"table": "/tmp/t", "key": "row_id", "label": "label", "features": "a,b"}
    base.update(flags)
    with pytest.raises(InvalidInputError, match=message):
        load_config(None, **base)


def test_secrets_never_reach_loggable_params() -> None:
    cfg = load_config(
        None, table="/tmp/t", key="k", label="y", features="a", mlflow_uri="postgresql://alice:s3cret@db:5432/mlflow"
    )
    params = cfg.loggable()
    assert "s3cret" not in " ".join(params.values()) and "alice" not in params["mlflow_uri"]
    assert params["mlflow_uri"] == "postgresql://***@db:5432/mlflow"
    assert scrub_uri("https://host/x?token=abc&v=1") == "https://host/x?token=***&v=1"


def _run_parser_actions():
    import argparse

    from ecoval_ops.cli import _parser

    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return [a for a in commands.choices["run"]._actions if a.dest not in ("help", "config")]


def test_cli_flags_and_yaml_keys_are_the_settings(tmp_path) -> None:
    from ecoval_ops.config import settings

    names = [s.name for s in settings()]
    actions = _run_parser_actions()
    assert [a.dest for a in actions] == names
    by_dest = {a.dest: a for a in actions}
    assert by_dest["learner"].choices == ("logistic", "mlp", "trees")
    assert by_dest["device"].choices == ("auto", "cpu", "cuda")
    assert by_dest["k_neighbors"].type is int and by_dest["c_kappa"].type is float
    assert by_dest["json_output"].option_strings == ["--json"]
    assert by_dest["pairwise"].option_strings == ["--pairwise", "--no-pairwise"]
    assert by_dest["n_clusters"].option_strings == ["--n-clusters", "--clusters"]
    assert "(default 10)" in by_dest["k_neighbors"].help and by_dest["table"].help.startswith(
        "the source Delta table: a path or a URI"
    )
    assert by_dest["k_neighbors"].help.startswith("within-cluster neighbours of the redundancy rho, k")
    # Every setting is a YAML key, under its own name.
    values = {
        "table": "t", "key": "k", "label": "y", "features": "a,b", "validation_fraction": 0.2, "refit": "never",
        "mlflow_uri": "sqlite:///x.db", "experiment": "e", "model_name": "m", "n_clusters": 3, "budget": 30,
        "seed": 4, "learner": "trees", "device": "cpu", "k_neighbors": 7, "c_kappa": 2.5, "engine": "delta-rs",
        "vote_neighbors": 12, "halo_clusters": 0, "prior_weight": 0.5, "neighbour_search": "exact",
        "max_reference_rows": 5000, "validation_rows": 900, "shards": 2, "staging_dir": "ws", "quiet": True,
        "json_output": True, "values_table": "v", "storage_options": "AWS_REGION=eu-west-1",
        "alert_suspect_share": 0.3, "alert_drift": 0.1, "review_columns": "a,c",
        "spark_cores": 1, "spark_driver_memory": "2g", "spark_executor_memory": "512m",
        "spark_remote": "sc://spark.example:15002", "spark_conn_id": "spark_connect_default",
        "pairwise": False, "utility": "accuracy", "seeds": 2, "max_train_rows": 800, "min_cluster_frac": 0.02,
        "pca_dims": 8, "shrinkage": False, "empirical_bayes": False, "threads": 1,
    }  # fmt: skip
    image_only = {"embedding_col", "image_col", "embedder", "weights", "validation_table"}
    assert set(values) == set(names) - image_only
    path = tmp_path / "run.yaml"
    path.write_text("\n".join(f"{k}: {v}" for k, v in values.items()))
    cfg = load_config(path)
    method = cfg.method
    assert (method.learner, method.device, method.k_neighbors, method.c_kappa, cfg.json_output) == (
        "trees", "cpu", 7, 2.5, True,
    )  # fmt: skip
    assert (method.vote_neighbors, method.halo_clusters, method.prior_weight, method.max_reference_rows) == (
        12, 0, 0.5, 5000,
    )  # fmt: skip
    assert (method.pairwise, method.utility, method.seeds, method.pca_dims, method.shrinkage) == (
        False, "accuracy", 2, 8, False,
    )  # fmt: skip
    assert cfg.source.validation_rows == 900
    assert cfg.tracking.review_columns == ("a", "c") and cfg.source.values_table is not None
    assert cfg.source.storage_options == {"AWS_REGION": "eu-west-1"}
    assert cfg.source.values_table.storage_options == cfg.source.storage_options
    assert cfg.staging_dir is not None and cfg.staging_dir.storage_options == cfg.source.storage_options
    assert (cfg.spark.spark_cores, cfg.spark.spark_driver_memory, cfg.spark.spark_executor_memory) == (1, "2g", "512m")
    with pytest.raises(InvalidInputError, match="spark_executor_memory must be a JVM memory size"):
        load_config(path, spark_executor_memory="lots")


def test_each_setting_is_defined_once_and_the_method_group_is_the_estimators_parameters() -> None:
    import inspect

    from ecoval_ops.config import RunConfig, settings
    from ecoval_ops.valuation import EcoVal

    listed = list(settings())
    names = [s.name for s in listed]
    assert len(names) == len(set(names)), "a setting name in two groups"
    signature = inspect.signature(EcoVal.__init__).parameters
    method = [s for s in listed if s.group == "method"]
    objects = {"clusterer", "production", "propagator"}
    assert [s.name for s in method] == [n for n in signature if n not in {"self", *objects}]
    assert all(s.default == signature[s.name].default for s in method)
    # No other group or run setting repeats an estimator parameter under another name.
    assert not {s.name for s in listed if s.group != "method"} & set(signature)
    cfg = load_config(None, table="/t", key="k", label="y", features="a", k_neighbors=7, pairwise=False)
    ev = EcoVal(**cfg.method.model_dump())
    assert ev.get_params() == {**EcoVal().get_params(), "k_neighbors": 7, "pairwise": False}
    assert set(RunConfig.model_fields) == {"source", "method", "tracking", "alerts", "spark"} | {
        s.name for s in listed if s.group is None
    }


def test_an_estimator_parameter_is_a_setting_with_its_bounds_and_docs() -> None:
    from ecoval_ops.valuation.params import Positive, check_params, settings_model

    # The annotations are resolved in this module's globals, as an estimator's are in its module's.
    class Toy:
        """A toy estimator.

        Args:
            width: how wide, in
                rows.
            mode: ``"a"`` or ``"b"``.
            part: an object, not a setting.
        """

        def __init__(self, *, width: Annotated[int, Ge(3)] | None = None, mode: str = "a", part: object = None):
            self.width, self.mode, self.part = width, mode, part

    model = settings_model(Toy)
    assert list(model.model_fields) == ["width", "mode"]
    assert model.model_fields["width"].description == "how wide, in rows"
    assert model.model_fields["mode"].description == '"a" or "b"'
    assert model(width="4").width == 4
    with pytest.raises(ValueError, match="greater than or equal to 3"):
        model(width=2)
    with pytest.raises(InvalidInputError, match=r"^Toy: width must be an integer >= 3 or None; found 2$"):
        check_params(Toy, {"width": 2})
    with pytest.raises(InvalidInputError, match="width must be an integer >= 3 or None; found '4'"):
        check_params(Toy, {"width": "4"})
    assert Positive.__metadata__ == (Ge(1),)


def test_yaml_may_group_settings_and_earlier_names_still_read(tmp_path, capsys) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "source:\n  table: /lake/t\n  key: id\n  label: y\n  features: a,b\n"
        "method:\n  n_clusters: 5\n  seed: 2\nspark:\n  spark_cores: 1\nengine: delta-rs\nk_neighbors: 4\n"
    )
    cfg = load_config(path, seed=8)
    assert (cfg.method.n_clusters, cfg.method.seed, cfg.method.k_neighbors) == (5, 8, 4)
    assert (cfg.spark.spark_cores, cfg.engine, cfg.source.key) == (1, "delta-rs", "id")
    flat = tmp_path / "flat.yaml"
    flat.write_text("table: /lake/t\nkey: id\nlabel: y\nfeatures: a,b\nclusters: 5\nreference_rows: 900\n")
    with pytest.warns(FutureWarning, match="is now") as renamed:
        old = load_config(flat)
    assert [str(w.message).split(";")[0] for w in renamed] == [
        "setting clusters is now n_clusters", "setting reference_rows is now max_reference_rows",
    ]  # fmt: skip
    assert (old.method.n_clusters, old.method.max_reference_rows) == (5, 900)
    # From the command line the warning is one line, and the run goes on (here to a missing table).
    import warnings

    from ecoval_ops.cli import main

    with warnings.catch_warnings():
        warnings.resetwarnings()
        assert main(["run", "--config", str(flat), "--engine", "delta-rs", "--quiet"]) == 2
    printed = capsys.readouterr().err.splitlines()
    assert printed[0] == "ecoval: warning: setting clusters is now n_clusters; read as n_clusters"
    assert printed[-1].startswith("ecoval: error: ") and "/lake/t" in printed[-1]
    with pytest.raises(
        InvalidInputError, match=r"invalid configuration: method.n_clusters: .*greater than or equal to 2"
    ):
        load_config(path, n_clusters=1)


def test_a_pinned_configuration_round_trips_nested_and_one_pinned_flat_still_loads() -> None:
    from ecoval_ops.config import RunConfig

    cfg = load_config(
        None, table="/t", key="k", label="y", features="a", n_clusters=4, spark_remote="sc://h:15002/;token=abc",
        storage_options='{"AWS_REGION": "eu", "AWS_SECRET_ACCESS_KEY": "s3cret"}',
    )  # fmt: skip
    pinned = cfg.pinned()
    assert pinned["method"]["n_clusters"] == 4 and "token" not in pinned["spark"]["spark_remote"]
    assert "s3cret" not in str(pinned)
    assert RunConfig.model_validate(cfg.pinned(secrets=True)) == cfg
    flat = {"table": "/t", "key": "k", "label": "y", "features": ["a"], "n_clusters": 4, "refit": "never"}
    assert RunConfig.model_validate(flat).method.n_clusters == 4
    assert cfg.with_settings(refit="never", k_neighbors=3).method.k_neighbors == 3
    assert cfg.with_settings(k_neighbors=3).spark.spark_remote == cfg.spark.spark_remote


def test_settings_resolve_conf_then_variable_then_environment_then_default(monkeypatch) -> None:
    from ecoval_ops.config import resolve_settings
    from ecoval_ops.pipeline.tasks import resolved_settings

    monkeypatch.setenv("ECOVAL_TABLE", "/env/table")
    monkeypatch.setenv("ECOVAL_KEY", "env_key")
    monkeypatch.setenv("ECOVAL_LABEL", "env_label")
    monkeypatch.setenv("ECOVAL_FEATURES", "a,b")
    monkeypatch.setenv("ECOVAL_BUDGET", "30")
    monkeypatch.setenv("ECOVAL_SEED", "9")
    variables = {"table": "/var/table", "budget": "40", "key": ""}
    params = {"table": None, "budget": 50, "label": "conf_label"}
    cfg = load_config(None, **resolved_settings(params, variables))
    # conf > Variable > environment > default; None and "" count as not given at every layer.
    assert str(cfg.source.table) == "/var/table" and cfg.method.budget == 50 and cfg.source.label == "conf_label"
    assert cfg.source.key == "env_key" and cfg.method.seed == 9 and cfg.source.features == ("a", "b")
    assert cfg.refit == "auto" and cfg.method.n_clusters is None
    assert resolve_settings([{"seed": ""}, {"seed": 0}], ["seed"]) == {"seed": 0}
