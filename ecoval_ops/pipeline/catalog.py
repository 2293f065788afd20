"""The tables one DAG file values: the YAML file named by ``ECOVAL_TABLES`` (issue: many tables).

The file is a list of entries, each a ``name`` (an identifier: the DAG is
``ecoval_nightly__<name>``), an optional ``schedule`` (cron, UTC) and any run setting under its
snake_case name (``table``, ``key``, ``label``, ``features``, ``budget``, ...)::

    - name: fraud
      table: /lake/fraud/train
      key: txn_id
      label: is_fraud
      features: amount,age,score
      schedule: "0 3 * * *"
    - name: wines
      table: /lake/wines
      key: id
      label: cultivar
      embedding_col: emb
      notifiers:                       # called with the reason when a night is an alert
        - class: airflow.providers.slack.notifications.slack.SlackNotifier
          slack_conn_id: slack
          text: "ecoval alert on wines: {{ ecoval_alert }}"

An unreadable file, or one that is not a list, is one error naming the file. A bad entry
(unknown key, duplicate or invalid name, no table) does not take the others down: it comes back
with its ``problem``, which the DAG file turns into a DAG whose only task fails with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecoval_ops.config import OUTPUT_SETTINGS, flat_settings, settings
from ecoval_ops.exceptions import InvalidInputError
from ecoval_ops.identifiers import check_identifier
from ecoval_ops.storage import TableRef

__all__ = ["TABLES_ENV", "TableEntry", "read_tables", "source_uri", "values_uri"]

TABLES_ENV = "ECOVAL_TABLES"
"""The environment variable naming the YAML file of tables."""


@dataclass(frozen=True)
class TableEntry:
    """One table of the file.

    Attributes:
        name: the entry's name, or ``entry_<i>`` when its name is unusable.
        settings: the run settings the entry gives (snake_case names).
        schedule: its cron, or None for the default.
        problem: why the entry cannot run (None when it can).
        notifiers: Airflow notifiers to call on an alert: each a ``class`` (a dotted import path
            of a ``BaseNotifier``) and its keyword arguments.
    """

    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    schedule: str | None = None
    problem: str | None = None
    notifiers: list[dict[str, Any]] = field(default_factory=list)


def source_uri(table: str | Path) -> str:
    """The source asset of a table, which a producer declares as outlet.

    Its ``file://`` URI, or its object-store URI as given (``s3://bucket/path``).
    """
    ref = TableRef.of(table)
    return Path(ref.uri).as_uri() if ref.is_local else ref.uri


def values_uri(table: str | Path) -> str:
    """The asset of a table's value columns (never the source asset: a MERGE triggers no run).

    ``ecoval://values/<absolute path>``, or ``ecoval://values/<scheme>/<bucket>/<path>``.
    """
    ref = TableRef.of(table)
    return "ecoval://values" + (ref.uri if ref.is_local else "/" + ref.uri.replace("://", "/", 1))


def _entry(index: int, raw: object, seen: set[str]) -> TableEntry:
    fallback = f"entry_{index}"
    if not isinstance(raw, dict):
        return TableEntry(fallback, problem=f"entry {index} is not a mapping of settings: {raw!r}")
    try:
        name = check_identifier(raw.get("name"), "table name")
    except InvalidInputError as e:
        return TableEntry(fallback, problem=f"entry {index}: {e}")
    if name in seen:
        return TableEntry(fallback, problem=f"entry {index}: the name {name!r} is used by an earlier entry")
    seen.add(name)
    known = {s.name for s in settings()} - OUTPUT_SETTINGS
    values = flat_settings({k: v for k, v in raw.items() if k not in ("name", "schedule", "notifiers")})
    unknown = sorted(set(values) - known)
    if unknown:
        return TableEntry(name, problem=f"table {name!r}: unknown settings {unknown}; known: {sorted(known)}")
    if not values.get("table"):
        return TableEntry(name, problem=f"table {name!r}: no table path given")
    schedule = raw.get("schedule")
    if schedule is not None and not isinstance(schedule, str):
        return TableEntry(name, problem=f"table {name!r}: schedule must be a cron string; found {schedule!r}")
    notifiers = raw.get("notifiers") or []
    if not isinstance(notifiers, list) or not all(
        isinstance(n, dict) and isinstance(n.get("class"), str) for n in notifiers
    ):
        return TableEntry(name, problem=f"table {name!r}: notifiers must be a list of mappings, each with a class path")
    return TableEntry(name, values, schedule, notifiers=notifiers)


def read_tables(path: str | Path) -> list[TableEntry]:
    """The entries of the tables file, each checked on its own.

    Raises:
        InvalidInputError: the file cannot be read or parsed, or is not a list.
    """
    import yaml

    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise InvalidInputError(f"{TABLES_ENV} file {path} cannot be read: {e}") from e
    if not isinstance(loaded, list):
        raise InvalidInputError(f"{TABLES_ENV} file {path} must be a list of tables; found {type(loaded).__name__}")
    seen: set[str] = set()
    return [_entry(i, raw, seen) for i, raw in enumerate(loaded)]
