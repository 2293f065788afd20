from __future__ import annotations

from pathlib import Path

import pytest

from ecoval_ops.config import load_config
from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.identifiers import scrub_uri


def test_flags_win_over_yaml_and_paths_are_normalised(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("table: ./lake/train\nkey: row_id\nlabel: y\nfeatures: a,b\nseed: 3\nrefit: never\n")
    cfg = load_config(cfg_file, seed=7, engine="delta-rs", quiet=None)
    assert str(cfg.table) == str((tmp_path / "lake" / "train").resolve())
    assert cfg.features == ("a", "b")
    assert (cfg.seed, cfg.refit, cfg.engine) == (7, "never", "delta-rs")
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
        ({"clusters": 1}, "clusters"),
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


def test_cli_flags_and_yaml_keys_are_the_config_fields(tmp_path) -> None:
    from ecoval_ops.config import RunConfig, settings

    fields = list(RunConfig.model_fields)
    actions = _run_parser_actions()
    assert [a.dest for a in actions] == fields == [s.name for s in settings()]
    by_dest = {a.dest: a for a in actions}
    assert by_dest["learner"].choices == ("logistic", "mlp") and by_dest["device"].choices == ("auto", "cpu", "cuda")
    assert by_dest["k_neighbors"].type is int and by_dest["c_kappa"].type is float
    assert by_dest["json_output"].option_strings == ["--json"]
    assert "(default 10)" in by_dest["k_neighbors"].help and by_dest["table"].help.startswith(
        "the source Delta table: a path or a URI"
    )
    # Every field is a YAML key, under its own name.
    values = {
        "table": "t", "key": "k", "label": "y", "features": "a,b", "validation_fraction": 0.2, "refit": "never",
        "mlflow_uri": "sqlite:///x.db", "experiment": "e", "model_name": "m", "clusters": 3, "budget": 30,
        "seed": 4, "learner": "mlp", "device": "cpu", "k_neighbors": 7, "c_kappa": 2.5, "engine": "delta-rs",
        "vote_neighbors": 12, "halo_clusters": 0, "prior_weight": 0.5, "neighbour_search": "exact",
        "reference_rows": 5000, "validation_rows": 900, "shards": 2, "staging_dir": "ws", "quiet": True,
        "json_output": True, "values_table": "v", "storage_options": "AWS_REGION=eu-west-1",
        "alert_suspect_share": 0.3, "alert_drift": 0.1, "review_columns": "a,c",
        "spark_cores": 1, "spark_driver_memory": "2g", "spark_executor_memory": "512m",
        "spark_remote": "sc://spark.example:15002", "spark_conn_id": "spark_connect_default",
    }  # fmt: skip
    image_only = {"embedding_col", "image_col", "embedder", "weights", "validation_table"}
    assert set(values) == set(fields) - image_only
    path = tmp_path / "run.yaml"
    path.write_text("\n".join(f"{k}: {v}" for k, v in values.items()))
    cfg = load_config(path)
    assert (cfg.learner, cfg.device, cfg.k_neighbors, cfg.c_kappa, cfg.json_output) == ("mlp", "cpu", 7, 2.5, True)
    assert (cfg.vote_neighbors, cfg.halo_clusters, cfg.prior_weight, cfg.reference_rows) == (12, 0, 0.5, 5000)
    assert cfg.validation_rows == 900
    assert cfg.review_columns == ("a", "c") and cfg.values_table is not None
    assert (
        cfg.storage_options == {"AWS_REGION": "eu-west-1"} and cfg.values_table.storage_options == cfg.storage_options
    )
    assert (cfg.spark_cores, cfg.spark_driver_memory, cfg.spark_executor_memory) == (1, "2g", "512m")
    with pytest.raises(InvalidInputError, match="spark_executor_memory must be a JVM memory size"):
        load_config(path, spark_executor_memory="lots")


def test_the_engine_knobs_reach_the_estimator(tmp_path) -> None:
    from ecoval_ops.pipeline.pinned import PinnedRun

    cfg = load_config(
        None, table=str(tmp_path), key="k", label="y", features="a", learner="mlp", device="cpu", k_neighbors=7,
        c_kappa=2.5, clusters=4, budget=40, seed=3, vote_neighbors=12, halo_clusters=1, prior_weight=0.5,
        reference_rows=5000,
    )  # fmt: skip
    ev = PinnedRun(cfg, 0).estimator()
    assert (ev.learner, ev.device, ev.k_neighbors, ev.c_kappa, ev.n_clusters, ev.budget, ev.seed) == (
        "mlp", "cpu", 7, 2.5, 4, 40, 3,
    )  # fmt: skip
    assert (ev.vote_neighbors, ev.halo_clusters, ev.prior_weight, ev.max_reference_rows) == (12, 1, 0.5, 5000)
    with pytest.raises(InvalidInputError, match=r"learner: Input should be 'logistic' or 'mlp'"):
        load_config(None, table="t", key="k", label="y", features="a", learner="forest")


def test_settings_resolve_conf_then_variable_then_environment_then_default(monkeypatch) -> None:
    from ecoval_ops.config import resolve_settings
    from ecoval_ops.pipeline.tasks import config_from_params

    monkeypatch.setenv("ECOVAL_TABLE", "/env/table")
    monkeypatch.setenv("ECOVAL_KEY", "env_key")
    monkeypatch.setenv("ECOVAL_LABEL", "env_label")
    monkeypatch.setenv("ECOVAL_FEATURES", "a,b")
    monkeypatch.setenv("ECOVAL_BUDGET", "30")
    monkeypatch.setenv("ECOVAL_SEED", "9")
    variables = {"table": "/var/table", "budget": "40", "key": ""}
    params = {"table": None, "budget": 50, "label": "conf_label"}
    cfg = config_from_params(params, variables)
    # conf > Variable > environment > default; None and "" count as not given at every layer.
    assert str(cfg.table) == "/var/table" and cfg.budget == 50 and cfg.label == "conf_label"
    assert cfg.key == "env_key" and cfg.seed == 9 and cfg.features == ("a", "b")
    assert cfg.refit == "auto" and cfg.clusters is None
    assert resolve_settings([{"seed": ""}, {"seed": 0}], ["seed"]) == {"seed": 0}
