"""Names checked before they reach SQL text, and URIs scrubbed before they reach a log.

The bottom floor of the package (it imports nothing of ecoval_ops but the exceptions): every
layer checks identifiers (column and table names) against one allow-list, and nothing
user-given reaches SQL text unless it passed :func:`check_identifier`; the check is the same
for the Spark and the delta-rs engines. :func:`scrub_uri` drops credentials from URIs before
anything reaches a log or MLflow; :func:`split_remote` checks a Spark Connect URL.
"""

from __future__ import annotations

import re

from ecoval_ops.exceptions import InvalidInputError

__all__ = [
    "CONNECT_PORT",
    "check_identifier",
    "check_token",
    "quote_identifier",
    "remote_without_token",
    "scrub_uri",
    "split_remote",
]

_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
_SECRET_QUERY = re.compile(r"(?i)([?&;](?:password|token|secret|key|sig|signature)=)[^&]*")

CONNECT_PORT = 15002
"""Spark Connect's port when a URL names none."""
_REMOTE_TOKEN = re.compile(r"(?i);token=[^;]*")
_REMOTE = re.compile(r"sc://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::(?P<port>[0-9]{1,5}))?/?(?P<params>;.*)?")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def check_identifier(name: object, what: str) -> str:
    """Return ``name`` if it is a plain identifier: a letter or ``_``, then letters, digits, ``_``.

    Args:
        name: the candidate.
        what: what it names, for the message (for example ``"key column"``).

    Raises:
        InvalidInputError: anything else, such as ``label; DROP TABLE x`` or ``a.b``.
    """
    if not isinstance(name, str) or _IDENTIFIER.fullmatch(name) is None:
        raise InvalidInputError(
            f"{what} {name!r} is not a plain identifier (letters, digits and _, starting with a letter or _, "
            "at most 128 characters)"
        )
    return name


_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")


def check_token(value: object, what: str) -> str:
    """Return ``value`` if it is letters, digits, ``_`` and ``-`` only (an MLflow run id, say).

    Such a value can sit inside a quoted SQL literal without escaping.

    Raises:
        InvalidInputError: anything else.
    """
    if not isinstance(value, str) or _TOKEN.fullmatch(value) is None:
        raise InvalidInputError(f"{what} {value!r} must be letters, digits, _ and - only (at most 128 characters)")
    return value


def quote_identifier(name: str, what: str) -> str:
    """Back-quote a checked identifier for Spark SQL and delta-rs predicates."""
    return f"`{check_identifier(name, what)}`"


def scrub_uri(uri: str) -> str:
    """``uri`` with user info and secret-looking query values replaced by ``***``."""
    return _SECRET_QUERY.sub(r"\1***", _CREDENTIALS.sub(r"\g<scheme>***@", uri))


def split_remote(remote: str) -> tuple[str, int]:
    """The host and port of a Spark Connect URL ``sc://host[:port][/;param=value...]``.

    Raises:
        InvalidInputError: ``remote`` is not such a URL (named without its token).
    """
    found = _REMOTE.fullmatch(remote.strip())
    if found is None:
        raise InvalidInputError(f"spark_remote {scrub_uri(remote)!r} is not a Spark Connect URL sc://host:port")
    return found["host"].strip("[]"), int(found["port"] or CONNECT_PORT)


def remote_without_token(remote: str) -> str:
    """A Spark Connect URL without its ``;token=`` parameter (what a pinned run may carry)."""
    return _REMOTE_TOKEN.sub("", remote)
