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
    assert cfg.table == (tmp_path / "lake" / "train").resolve()
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
