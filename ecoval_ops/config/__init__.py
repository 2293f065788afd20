"""The one typed configuration of a valuation run (architecture.md, "Conventions").

:class:`RunConfig` holds five settings groups (``source``, ``method``, ``tracking``, ``alerts``,
``spark``) and the run's own settings; the ``method`` group is EcoVal's own parameter set, taken
from its signature, so ``EcoVal(**cfg.method.model_dump())`` needs no mapping and a new
parameter of the estimator is a flag, a YAML key and a DAG param at once. :func:`settings`
lists them for the front ends, :func:`load_config` and :func:`resolve_settings` say where a
run's values come from. Paths are normalised, identifiers pass the allow-list, and
:meth:`RunConfig.loggable` drops secrets from URIs before anything reaches a log or MLflow.
"""

from ecoval_ops.config.groups import AlertSettings, MethodSettings, SourceSettings, SparkSettings, TrackingSettings
from ecoval_ops.config.resolve import Setting, load_config, resolve_settings, settings
from ecoval_ops.config.run import (
    OUTPUT_SETTINGS,
    RENAMED,
    RunConfig,
    default_tracking_uri,
    flat_settings,
    nest,
    tracking_store_exists,
)

__all__ = [
    "OUTPUT_SETTINGS",
    "RENAMED",
    "AlertSettings",
    "MethodSettings",
    "RunConfig",
    "Setting",
    "SourceSettings",
    "SparkSettings",
    "TrackingSettings",
    "default_tracking_uri",
    "flat_settings",
    "load_config",
    "nest",
    "resolve_settings",
    "settings",
    "tracking_store_exists",
]
