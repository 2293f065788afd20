"""Table addresses (issue 25): URIs and storage options, and what of them may be shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecoval_ops.config import RunConfig, load_config
from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.storage import TableRef, normalise_uri, s3_settings

COLUMNS = {"key": "row_id", "label": "label", "features": "f0,f1"}


@pytest.mark.parametrize(
    ("given", "uri"),
    [
        ("s3://Lake/train/", "s3://Lake/train"),
        ("S3A://lake/a/b", "s3a://lake/a/b"),
        ("abfss://c@acct.dfs.core.windows.net/t", "abfss://c@acct.dfs.core.windows.net/t"),
        ("gs://bucket/t", "gs://bucket/t"),
        ("file:///var/lake/t", "/var/lake/t"),
        ("/var/lake/../lake/t", "/var/lake/t"),
    ],
)
def test_uris_keep_their_scheme_and_local_paths_are_resolved(given, uri) -> None:
    assert normalise_uri(given) == uri


def test_a_relative_path_is_resolved_against_the_working_directory(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    assert normalise_uri("lake/t") == str(tmp_path / "lake" / "t")


def test_a_uri_without_a_bucket_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="names no bucket"):
        normalise_uri("s3://")


def test_a_ref_names_its_parts_and_each_engine_its_own_scheme() -> None:
    ref = TableRef.of("s3://lake/nightly/train", {"AWS_REGION": "eu-west-1"})
    assert (ref.name, ref.bucket, ref.scheme, ref.is_local) == ("train", "lake", "s3", False)
    assert ref.parent == TableRef.of("s3://lake/nightly") and ref.parent.storage_options == ref.storage_options
    assert (ref / "x").uri == "s3://lake/nightly/train/x"
    assert ref.spark_uri == "s3a://lake/nightly/train" and ref.delta_uri == "s3://lake/nightly/train"
    assert TableRef.of("s3a://lake/t").delta_uri == "s3://lake/t"
    local = TableRef.of(Path("/var/lake/t"))
    assert local.is_local and local.local_path == Path("/var/lake/t") and local.spark_uri == "/var/lake/t"
    with pytest.raises(InvalidInputError):
        _ = ref.local_path


def test_refs_compare_by_uri_and_print_no_options() -> None:
    secret = "sEcReT-value"
    ref = TableRef.of("s3://lake/t", {"AWS_SECRET_ACCESS_KEY": secret})
    assert ref == TableRef.of("s3://lake/t") and hash(ref) == hash(TableRef.of("s3://lake/t"))
    assert secret not in repr(ref) + str(ref)


@pytest.mark.parametrize(
    "given",
    [
        '{"AWS_SECRET_ACCESS_KEY": "sEcReT", "AWS_REGION": "eu-west-1"}',
        "AWS_SECRET_ACCESS_KEY=sEcReT,AWS_REGION=eu-west-1",
        {"AWS_SECRET_ACCESS_KEY": "sEcReT", "AWS_REGION": "eu-west-1"},
    ],
)
def test_storage_options_reach_every_table_and_their_secrets_are_never_pinned_or_logged(given) -> None:
    cfg = load_config(
        None, table="s3://lake/t", values_table="s3://lake/v", validation_table="s3://lake/x",
        storage_options=given, **COLUMNS,
    )  # fmt: skip
    assert (
        cfg.source.table.storage_options
        == cfg.source.values_table.storage_options
        == cfg.source.validation_table.storage_options
    )
    assert cfg.source.table.storage_options["AWS_SECRET_ACCESS_KEY"] == "sEcReT"
    assert "sEcReT" not in repr(cfg) + str(cfg.pinned()) + str(cfg.loggable())
    assert cfg.loggable()["storage_options"] == "AWS_SECRET_ACCESS_KEY=***,AWS_REGION=eu-west-1"
    rebuilt = RunConfig.model_validate(cfg.pinned())
    assert rebuilt.source.storage_options == {"AWS_REGION": "eu-west-1"}
    assert RunConfig.model_validate(cfg.pinned(secrets=True)) == cfg
    assert rebuilt.with_storage_options({"AWS_SECRET_ACCESS_KEY": "sEcReT"}) == cfg


def test_storage_options_that_are_not_a_mapping_are_one_line() -> None:
    with pytest.raises(InvalidInputError, match="storage_options must be a JSON object or KEY=VALUE pairs"):
        load_config(None, table="s3://lake/t", storage_options="just-a-word", **COLUMNS)


def test_spark_gets_the_s3a_settings_of_each_bucket(monkeypatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-from-env")
    ref = TableRef.of(
        "s3://lake/t", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "r"}
    )
    settings = s3_settings(ref)
    prefix = "fs.s3a.bucket.lake."
    assert settings[prefix + "endpoint"] == "http://127.0.0.1:9000"
    assert settings[prefix + "connection.ssl.enabled"] == "false" and settings[prefix + "path.style.access"] == "true"
    assert settings[prefix + "access.key"] == "key-from-env" and settings[prefix + "secret.key"] == "s"
    assert settings[prefix + "endpoint.region"] == "r"
    assert s3_settings(TableRef.of("/var/lake/t")) == {} and s3_settings(TableRef.of("gs://b/t")) == {}


def test_a_ref_shipped_to_an_executor_carries_the_drivers_aws_environment(monkeypatch) -> None:
    # A Spark executor on a worker host of its own has none of the driver's AWS variables.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://s3:9000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-the-env")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    ref = TableRef.of("s3://lake/_ecoval/train/model", {"AWS_ACCESS_KEY_ID": "given"})
    shipped = ref.with_environment()
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert shipped.option("AWS_ENDPOINT_URL") == "http://s3:9000"
    assert shipped.option("AWS_SECRET_ACCESS_KEY") == "from-the-env"
    assert shipped.option("AWS_ACCESS_KEY_ID") == "given" and shipped.option("AWS_SESSION_TOKEN") is None
    assert shipped == ref and "from-the-env" not in repr(shipped) + str(shipped)
    local = TableRef.of("/lake/train")
    assert local.with_environment() is local
