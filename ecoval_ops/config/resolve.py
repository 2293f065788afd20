"""Run settings as the front ends show them, and where a run's values come from.

:func:`settings` lists every field of :class:`~.run.RunConfig`'s groups and its own fields once:
``ecoval run``'s flags, the YAML keys of ``--config`` and the Airflow DAG's params are generated
from it, with the field's description as their help. First given wins (:func:`resolve_settings`):

- ``ecoval run``: flags > the ``--config`` YAML file > the field's default;
- an Airflow DAG run: the run's conf (params) > the Airflow Variable ``ecoval_<name>`` > the
  environment variable ``ECOVAL_<NAME>`` > the field's default.

A value of None or ``""`` counts as not given. The run's ``detect`` step resolves once; every
later step of the run uses that pinned configuration.
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from ecoval_ops.config.run import RENAMED, RunConfig, groups, merge_groups, nest
from ecoval_ops.exceptions import InvalidInputError

__all__ = ["Setting", "load_config", "resolve_settings", "settings"]


@dataclass(frozen=True)
class Setting:
    """One run setting as a front end shows it, derived from a field of :class:`RunConfig` or its groups.

    Attributes:
        name: the field name: the YAML key, the DAG param, ``ECOVAL_<NAME>``.
        group: the settings group it belongs to (``source``, ``method``, ...); None for the
            run's own settings.
        flag: the command-line flag (``--kebab-case``).
        kind: ``str``, ``int``, ``float`` or ``bool``.
        choices: the allowed values of a ``Literal`` field, else None.
        default: the field's default (None where it is derived or required).
        help: the field's description, with its default.
        required: no default: the run cannot start without it.
        aliases: earlier names of the setting (:data:`~.run.RENAMED`), still read.
    """

    name: str
    group: str | None
    flag: str
    kind: type
    choices: tuple[str, ...] | None
    default: Any
    help: str
    required: bool
    aliases: tuple[str, ...] = ()


def _kind(annotation: Any) -> tuple[type, tuple[str, ...] | None]:
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) is Literal:
        return str, tuple(str(a) for a in get_args(annotation))
    if annotation in (bool, int, float):
        return annotation, None
    return str, None


def _setting(name: str, field: FieldInfo, group: str | None) -> Setting:
    kind, choices = _kind(field.annotation)
    required = field.is_required()
    default = None if required else field.default
    help_text = field.description or name
    if default is not None and kind is not bool:
        help_text += f" (default {default})"
    return Setting(
        name=name,
        group=group,
        flag="--" + (field.alias or name).replace("_", "-"),
        kind=kind,
        choices=choices,
        default=default,
        help=help_text,
        required=required,
        aliases=tuple(old for old, new in RENAMED.items() if new == name),
    )


def settings() -> Iterator[Setting]:
    """Every run setting: :class:`RunConfig`'s own fields and its groups' fields, in field order."""
    nested = groups()
    for name, field in RunConfig.model_fields.items():
        if name in nested:
            yield from (_setting(n, f, name) for n, f in nested[name].model_fields.items())
        else:
            yield _setting(name, field, None)


def _given(value: Any) -> bool:
    return value is not None and value != ""


def resolve_settings(layers: Sequence[Mapping[str, Any]], names: Sequence[str] | None = None) -> dict[str, Any]:
    """For each setting, the value of the first layer that gives it (None and ``""`` do not).

    A layer may give a setting under an earlier name (:data:`~.run.RENAMED`).

    Args:
        layers: mappings of setting name to value, highest priority first (for a DAG run:
            the run's params, the Airflow Variables, the environment).
        names: the settings to resolve; default every one of :func:`settings`.

    Returns:
        The settings some layer gives, by their current names; the others take the default.
    """
    aliases = {s.name: s.aliases for s in settings()}
    out: dict[str, Any] = {}
    for name in names if names is not None else list(aliases):
        for layer in layers:
            value = next((layer.get(n) for n in (name, *aliases.get(name, ())) if _given(layer.get(n))), None)
            if _given(value):
                out[name] = value
                break
    return out


def load_config(path: str | Path | None = None, **flags: Any) -> RunConfig:
    """Build a :class:`RunConfig` from a YAML file and flags; flags given (not None or ``""``) win.

    The YAML file gives settings flat (``n_clusters: 8``), by group (``method: {n_clusters: 8}``)
    or both.

    Raises:
        InvalidInputError: unreadable YAML, unknown keys or invalid values, one line each.
    """
    import yaml

    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise InvalidInputError(f"cannot read config {path}: {e}") from e
        if not isinstance(loaded, dict):
            raise InvalidInputError(f"config {path} must be a mapping of setting names to values")
        values = nest(loaded)
    values = merge_groups(values, nest({k: v for k, v in flags.items() if _given(v)}))
    try:
        return RunConfig.model_validate(values)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'config'}: {err['msg']}" for err in e.errors())
        raise InvalidInputError(f"invalid configuration: {problems}") from e
