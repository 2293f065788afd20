"""Where a table lives: a URI and the storage options that reach it (delta-rs's one way to open a table).

A :class:`TableRef` names a local folder (``/data/train``) or an object-store prefix
(``s3://lake/train``, ``s3a://``, ``abfss://``, ``gs://``) with the storage options delta-rs
takes. Credentials and the endpoint also come from the standard environment variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``AWS_REGION``,
``AWS_ALLOW_HTTP``), which delta-rs and the AWS SDK read themselves; :func:`s3_settings` gives
Spark's ``s3a`` the same ones. A ref prints as its URI only: its options never reach a message,
a log line or MLflow (:func:`loggable_options`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ecoval_ops.exceptions import InvalidInputError

__all__ = [
    "TableRef",
    "is_secret_option",
    "loggable_options",
    "normalise_uri",
    "parse_storage_options",
    "s3_settings",
    "storage_error",
]

_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
_SECRET = re.compile(r"(?i)secret|token|password|session|credential|account_key|sas|access_key_id|signature")


def normalise_uri(value: str | Path) -> str:
    """A URI with a scheme as given (no trailing ``/``); a local path absolute and resolved.

    Raises:
        InvalidInputError: a URI without a bucket or container (``s3://``).
    """
    text = str(value).strip()
    match = _SCHEME.match(text)
    if match is None:
        return str(Path(text).expanduser().resolve())
    if match["scheme"].lower() == "file":
        return str(Path(urlsplit(text).path).resolve())
    parts = urlsplit(text.rstrip("/"))
    if not parts.netloc:
        raise InvalidInputError(f"{text!r} names no bucket or container; give a URI such as s3://bucket/path")
    return f"{parts.scheme.lower()}://{parts.netloc}{parts.path}"


def parse_storage_options(value: Any) -> dict[str, str] | None:
    """Storage options from a mapping, a JSON object or ``KEY=VALUE,KEY=VALUE`` (a flag or a Variable)."""
    if value in (None, "", {}):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text.startswith("{") else dict(p.split("=", 1) for p in text.split(","))
        except ValueError:
            raise ValueError("storage_options must be a JSON object or KEY=VALUE pairs separated by commas") from None
    if not isinstance(value, Mapping):
        raise ValueError("storage_options must be a mapping of option names to values")
    return {str(k).strip(): str(v).strip() for k, v in value.items()}


def is_secret_option(name: str) -> bool:
    """Whether a storage option carries a secret (keys, tokens, passwords, signatures)."""
    return _SECRET.search(name) is not None


def loggable_options(options: Mapping[str, str]) -> dict[str, str]:
    """``options`` with every secret value replaced by ``***``."""
    return {k: "***" if is_secret_option(k) else str(v) for k, v in options.items()}


AWS_SETTINGS = (
    "AWS_ENDPOINT_URL",
    "AWS_ALLOW_HTTP",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)
"""The AWS environment variables an S3 table is opened with, as delta-rs and the AWS SDK read them."""


@dataclass(frozen=True)
class TableRef:
    """A Delta table's address: its URI and the storage options delta-rs opens it with.

    Two refs are equal when their URIs are; ``str(ref)`` is the URI, never the options.

    Attributes:
        uri: a resolved local path or a URI with a scheme (:func:`normalise_uri`).
        storage_options: delta-rs storage options; the environment supplies the rest.
    """

    uri: str
    storage_options: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def of(cls, value: TableRef | str | Path, storage_options: Mapping[str, str] | None = None) -> TableRef:
        """``value`` as a ref; a ref keeps its own options unless ``storage_options`` are given."""
        if isinstance(value, TableRef):
            return value if storage_options is None else cls(value.uri, dict(storage_options))
        return cls(normalise_uri(value), dict(storage_options or {}))

    def __str__(self) -> str:
        return self.uri

    @property
    def scheme(self) -> str:
        """The URI's scheme, ``""`` for a local path."""
        match = _SCHEME.match(self.uri)
        return "" if match is None else match["scheme"]

    @property
    def is_local(self) -> bool:
        """Whether the table is a folder of this machine's file system."""
        return not self.scheme

    @property
    def is_s3(self) -> bool:
        """Whether the table is in S3 (``s3://`` or ``s3a://``)."""
        return self.scheme in ("s3", "s3a")

    def option(self, name: str) -> str | None:
        """A storage option by its upper- or lower-case name, else the environment variable ``name``."""
        return self.storage_options.get(name) or self.storage_options.get(name.lower()) or os.environ.get(name)

    def with_environment(self) -> TableRef:
        """The ref with the S3 settings this process has from its environment written into its options.

        For a process elsewhere that reads the same place without that environment: a Spark
        executor on another host loading the run's model from the workspace in the bucket.
        """
        if not self.is_s3:
            return self
        found = {name: value for name in AWS_SETTINGS if (value := self.option(name))}
        return TableRef(self.uri, {**self.storage_options, **found})

    @property
    def name(self) -> str:
        """The last segment of the path (the table's folder name)."""
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> TableRef:
        """The prefix (or folder) that holds the table."""
        if self.is_local:
            return TableRef(str(Path(self.uri).parent), self.storage_options)
        head, _, _ = self.uri.rpartition("/")
        return TableRef(head if not head.endswith(":/") else self.uri, self.storage_options)

    def __truediv__(self, name: str) -> TableRef:
        return TableRef(f"{self.uri.rstrip('/')}/{name}", self.storage_options)

    @property
    def delta_uri(self) -> str:
        """The URI delta-rs opens (``s3a://`` read as ``s3://``)."""
        return "s3://" + self.uri[len("s3a://") :] if self.scheme == "s3a" else self.uri

    @property
    def spark_uri(self) -> str:
        """The path Spark opens: ``s3://`` goes through Hadoop's ``s3a`` connector."""
        return "s3a://" + self.uri[len("s3://") :] if self.scheme == "s3" else self.uri

    @property
    def local_path(self) -> Path:
        """The folder of a local table.

        Raises:
            InvalidInputError: the table is in an object store.
        """
        if not self.is_local:
            raise InvalidInputError(f"{self.uri} is not a local folder")
        return Path(self.uri)

    @property
    def bucket(self) -> str:
        """The bucket or container of an object-store URI, ``""`` for a local path."""
        return "" if self.is_local else urlsplit(self.uri).netloc


def storage_error(error: Exception, ref: TableRef) -> InvalidInputError:
    """One line for an object store's refusal of ``ref``, naming the cause and never a secret.

    delta-rs reports a store's answer as the whole HTTP exchange (which can include the key id
    and the string signed); only the kind of failure is kept.
    """
    text = str(error)
    if "NoSuchBucket" in text or re.search(r"Bucket '[^']*' not found", text):
        return InvalidInputError(f"bucket {ref.bucket!r} of {ref.uri} does not exist")
    refused = (
        "403 Forbidden",
        "(403)",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "AccessDenied",
        "ACCESS_DENIED",
        "privileges",
    )
    if any(s in text for s in refused):
        return InvalidInputError(
            f"access to {ref.uri} was refused: check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY "
            "or storage_options)"
        )
    if any(s in text for s in ("Connect", "connect", "dns error", "timed out")):
        where = ref.option("AWS_ENDPOINT_URL") or "the object store"
        return InvalidInputError(f"cannot reach {where} for {ref.uri}: check AWS_ENDPOINT_URL and the network")
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return InvalidInputError(f"cannot read {ref.uri}: {first[:200]}")


def s3_settings(ref: TableRef) -> dict[str, str]:
    """Hadoop's ``fs.s3a.bucket.<bucket>.*`` settings of ``ref`` from its options and the AWS environment.

    Empty for tables that are not on S3. Keys are set per bucket, so tables in buckets of other
    stores or accounts keep their own; Spark redacts the secret ones in its UI and logs.
    """
    if not ref.is_s3:
        return {}
    given = ref.option
    prefix = f"fs.s3a.bucket.{ref.bucket}."
    out = {prefix + "path.style.access": "true"}
    if endpoint := given("AWS_ENDPOINT_URL"):
        out[prefix + "endpoint"] = endpoint
        if endpoint.startswith("http://") or (given("AWS_ALLOW_HTTP") or "").lower() == "true":
            out[prefix + "connection.ssl.enabled"] = "false"
    if region := given("AWS_REGION") or given("AWS_DEFAULT_REGION"):
        out[prefix + "endpoint.region"] = region
    key, secret = given("AWS_ACCESS_KEY_ID"), given("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        out[prefix + "access.key"] = key
        out[prefix + "secret.key"] = secret
        out[prefix + "aws.credentials.provider"] = "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
    return out
