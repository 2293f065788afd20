"""An estimator's parameters, declared once: its ``__init__`` signature and its docstring's ``Args``.

Each parameter's type and bounds are its annotation (``Annotated[int, Ge(1)]``), its default the
signature's, its meaning the class docstring's ``Args`` entry. From that one declaration:

- :func:`check_params` checks the values before any work, as scikit-learn's
  ``_parameter_constraints`` do: a typo is one :class:`~ecoval_ops.exceptions.InvalidInputError`
  naming the class, the parameter and what it must be;
- :func:`settings_model` makes the pydantic model of the parameters a run can set from a flag, a
  YAML key or a DAG param (those of a plain type), so ``EcoVal(**settings.method)`` needs no
  mapping (:mod:`ecoval_ops.config`).
"""

from __future__ import annotations

import inspect
import re
import types
from collections.abc import Mapping
from functools import cache
from typing import Annotated, Any, Literal, Self, Union, get_args, get_origin, get_type_hints

import numpy as np
from annotated_types import Ge, Gt, Le, Lt
from pydantic import AllowInfNan, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from ecoval_ops.exceptions import InvalidInputError

__all__ = ["Count", "Parameters", "Positive", "Weight", "arg_docs", "check_params", "describe", "settings_model"]

Positive = Annotated[int, Ge(1)]
"""An integer >= 1."""
Count = Annotated[int, Ge(0)]
"""An integer >= 0."""
Weight = Annotated[float, Ge(0), AllowInfNan(False)]
"""A finite number >= 0."""

_PLAIN = (bool, int, float, str)
_BOUNDS = {Ge: (">=", "ge"), Gt: (">", "gt"), Le: ("<=", "le"), Lt: ("<", "lt")}
_CONFIG = ConfigDict(arbitrary_types_allowed=True)


def _members(annotation: Any) -> list[Any]:
    """The members of a union (``X | None`` included), else ``[annotation]``."""
    if get_origin(annotation) in (Union, types.UnionType):
        return list(get_args(annotation))
    return [annotation]


def _describe_one(annotation: Any) -> str:
    base, metadata = annotation, tuple[Any, ...]()
    if get_origin(annotation) is Annotated:
        base, *rest = get_args(annotation)
        metadata = tuple(rest)
    if base is type(None):
        return "None"
    if get_origin(base) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(base))
    if base is bool:
        return "True or False"
    bounds = [
        f"{symbol} {getattr(m, attr)}"
        for m in metadata
        for kind, (symbol, attr) in _BOUNDS.items()
        if isinstance(m, kind)
    ]
    finite = any(isinstance(m, AllowInfNan) and not m.allow_inf_nan for m in metadata)
    noun = {int: "an integer", float: "a finite number" if finite else "a number", str: "a string"}.get(base)
    if noun is None:
        methods = [n for n, v in vars(base).items() if callable(v) and not n.startswith("_")]
        noun = f"a {base.__name__}" + (f" ({', '.join(methods)})" if methods else "")
    return " ".join([noun, " and ".join(bounds)]).strip()


def describe(annotation: Any) -> str:
    """What a value of ``annotation`` must be, in words: ``"None or an integer >= 2"``."""
    words = [_describe_one(m) for m in _members(annotation)]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _init(cls: type) -> Any:
    """``cls``'s ``__init__``, its own or inherited."""
    return next(vars(c)["__init__"] for c in cls.__mro__ if "__init__" in vars(c))


@cache
def _hints(cls: type) -> dict[str, Any]:
    init = _init(cls)
    hints = get_type_hints(init, include_extras=True)
    return {name: hints[name] for name in inspect.signature(init).parameters if name != "self"}


@cache
def _adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation, config=_CONFIG)


def check_params(owner: type, values: Mapping[str, Any]) -> None:
    """Check each of ``values`` against its annotation in ``owner.__init__``, strictly ("3" is no integer).

    Numpy scalars count as the Python scalars they hold; the values themselves are not changed.

    Raises:
        InvalidInputError: ``"<Owner>: <name> must be <what>; found <value>"``.
    """
    for name, annotation in _hints(owner).items():
        if name not in values:
            continue
        value = values[name]
        plain = value.item() if isinstance(value, np.generic) else value
        try:
            _adapter(annotation).validate_python(plain, strict=True)
        except ValidationError:
            raise InvalidInputError(
                f"{owner.__name__}: {name} must be {describe(annotation)}; found {value!r}"
            ) from None


def _plain(annotation: Any) -> Any | None:
    """``annotation`` narrowed to its plain members (scalars, literals, None); None when it has none."""
    kept = []
    for member in _members(annotation):
        base = get_args(member)[0] if get_origin(member) is Annotated else member
        if base is type(None) or base in _PLAIN or get_origin(base) is Literal:
            kept.append(member)
    if not kept or kept == [type(None)]:
        return None
    return kept[0] if len(kept) == 1 else Union[tuple(kept)]  # noqa: UP007 (a runtime union of a list)


def arg_docs(cls: type) -> dict[str, str]:
    """The entries of ``cls``'s docstring ``Args:`` section, one line each, without reST markup."""
    section = re.search(r"\n([ \t]*)Args:\n(.*?)(?:\n[ \t]*\n|\Z)", cls.__doc__ or "", re.S)
    if section is None:
        return {}
    docs: dict[str, str] = {}
    indent = len(section.group(1)) + 4
    name = None
    for line in section.group(2).splitlines():
        entry = re.match(rf"\s{{{indent}}}(\w+): (.*)", line)
        if entry:
            name, docs[entry.group(1)] = entry.group(1), entry.group(2)
        elif name is not None:
            docs[name] += " " + line.strip()
    return {n: re.sub(r":\w+:`~?(?:[\w.]*\.)?(\w+)`", r"\1", d.replace("``", "")).rstrip(".") for n, d in docs.items()}


@cache
def settings_model(cls: type) -> type[BaseModel]:
    """The pydantic model of ``cls``'s parameters of a plain type, with their defaults and docs.

    Its fields are ``cls``'s parameters in signature order; the others (objects such as a
    clusterer) are not settings. ``cls(**model.model_dump())`` builds the estimator.
    """
    docs = arg_docs(cls)
    defaults = inspect.signature(_init(cls)).parameters
    fields: dict[str, Any] = {}
    for name, annotation in _hints(cls).items():
        plain = _plain(annotation)
        if plain is not None:
            fields[name] = (plain, Field(default=defaults[name].default, description=docs.get(name, name)))
    return create_model(
        f"{cls.__name__}Settings",
        __config__=ConfigDict(extra="forbid", frozen=True),
        __doc__=f"The parameters of {cls.__name__} a run sets (a flag, a YAML key, a DAG param each).",
        **fields,
    )


class Parameters:
    """scikit-learn's parameter contract for an estimator whose ``__init__`` stores each argument as given.

    ``get_params`` and ``set_params`` (so ``sklearn.base.clone`` works), a ``repr`` of the
    parameters, and :meth:`check_params` against the annotations.
    """

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Every ``__init__`` argument by name, as stored.

        ``deep`` is accepted for scikit-learn; the composed parts are returned as given.
        """
        owner: type = type(self)
        return {name: getattr(self, name) for name in _hints(owner)}

    def set_params(self, **params: Any) -> Self:
        """Set ``__init__`` arguments by name; checked at the next fit, as scikit-learn does.

        Raises:
            InvalidInputError: a name that is not an ``__init__`` argument.
        """
        known = self.get_params()
        unknown = sorted(set(params) - set(known))
        if unknown:
            owner = type(self).__name__
            raise InvalidInputError(f"{owner} has no parameter {', '.join(unknown)}; it has {', '.join(known)}")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def check_params(self) -> None:
        """Check every parameter against its annotation (:func:`check_params`)."""
        check_params(type(self), self.get_params())
