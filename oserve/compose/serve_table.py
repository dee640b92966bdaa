"""The profile table a serve config's orchestrator plans with: one function for ``oserve serve``
(:mod:`oserve.compose.stack`) and ``oserve plan`` (:mod:`oserve.cli.plan`), so the plan printed for a
serve config is made from the same capacities the running control loop would use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from oserve.config import ServeConfig
from oserve.errors import ConfigError

if TYPE_CHECKING:
    from oserve.profiles.table import ProfileTable

__all__ = ["orchestrator_table"]


def orchestrator_table(config: ServeConfig, table: ProfileTable | None = None) -> ProfileTable:
    """The table ``config``'s orchestrator plans with.

    ``table`` (default: ``orchestrator.table``, relative to the config file) restricted to the
    config's variants; with ``orchestrator.recompute_capacities`` its per-class capacities are
    recomputed at the config's class lengths and ``orchestrator.slo`` by
    :func:`oserve.profiles.rescore.planning_table` (which warns about classes no variant then
    serves), otherwise the stored capacities are used and the table must hold the config's classes.

    Args:
        config: a serve config.
        table: a profile table to use instead of the one ``orchestrator.table`` names.

    Raises:
        ConfigError: no ``table`` given and the config has no ``orchestrator`` (field ``orchestrator.table``).
        ProfileError: the table lacks a variant of the config, or (stored capacities) one of its classes.
    """
    from oserve.profiles.table import ProfileTable

    oc = config.orchestrator
    if table is None:
        if oc is None:
            raise ConfigError("the config has no orchestrator, so no profile table to plan with",
                              field="orchestrator.table", allowed="an orchestrator section, or a table given")
        table = ProfileTable.load(config.resolve(oc.table))
    slo = oc.slo if oc is not None and oc.recompute_capacities else None  # set: recompute at this SLO
    scheme = config.classes.to_scheme()
    # recomputed capacities follow the config's classes (any scheme); stored ones must match them
    table.check_against(list(config.variants), [] if slo is not None else scheme.names)
    # plan only the variants the config can start (a table may hold more)
    table = table.model_copy(update={"variants": {v: table.variants[v] for v in config.variants}})
    if slo is not None:
        from oserve.profiles.rescore import planning_table

        table = planning_table(table, scheme, slo)
    return table
