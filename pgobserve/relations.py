"""The other tables a consumer's queryset reads, whose changes re-check what it watches (internal).

A per-user queryset such as ``Task.objects.filter(project__owner=user)`` decides a task's
visibility from a column of ``tasks_project``: when a project changes owner, no task row
changes, yet the old owner must lose its tasks and the new owner gain them. The tables a
queryset reads are known without running it: Django's query lists its joins
(``alias_map``; a join the query trimmed has no references left), and subqueries
(``pk__in=<queryset>``, ``Exists(...)``) are queries of their own.

A consumer follows those tables (``GenericAsyncAPIConsumer.follow_joins``): it joins each
one's table group, and its ``WatchRegistry`` turns a change there into "re-check
everything watched on the consumer's own table": which watched rows a joined row affects
is unknown, and one bounded read per consumer per batch (a ``pk__in`` read of the watched
rows, each query subscription re-run) costs less than finding out. A joined table that has
no triggers is logged once per consumer class, naming the model to observe.

Many-to-many fields are followed too (``many_to_many_tables``): a row's m2m data lives in
the ``through`` table, so ``user.groups.add(g)`` (or ``remove``, ``clear``, ``set``, raw
SQL) changes no user row. Following the through tables of every m2m field of the model,
forward and reverse, whether or not the serializer shows them, re-checks the watched rows,
and an ``update`` goes out exactly when the serialized data changed (DCRF pushes on
``m2m_changed`` signals, so it misses raw SQL and other processes).

Not followed: the consumer's own table reached through a join (a self-referencing
relation; its rows are re-checked when they change themselves), and anything else the
serializer reads (a foreign key's target shown nested, say).
"""

from __future__ import annotations

import logging
from typing import Any

from django.apps import apps
from django.db.models import Model, QuerySet
from django.db.models.sql.datastructures import BaseTable
from django.db.models.sql.query import Query

from . import registry

__all__: list[str] = []  # internal: no public API

logger = logging.getLogger("pgobserve.consumers")

#: (consumer class, table) pairs already warned about: one warning per class and table.
_warned: set[tuple[type, str]] = set()


def joined_tables(queryset: QuerySet[Any] | Query) -> set[str]:
    """Every table ``queryset`` reads besides its own model's, subqueries included."""
    query = queryset.query if isinstance(queryset, QuerySet) else queryset
    found: set[str] = set()
    _collect_query(query, found, set())
    found.discard(query.get_meta().db_table)
    return found


def _collect_query(query: Query, found: set[str], seen: set[int]) -> None:
    if id(query) in seen:
        return
    seen.add(id(query))
    for alias, table in query.alias_map.items():
        if isinstance(table, BaseTable) or query.alias_refcount.get(alias, 0) > 0:
            found.add(table.table_name)
    for node in [query.where, *query.annotations.values()]:
        _collect_node(node, found, seen)
    for combined in query.combined_queries:  # union(), intersection(), difference()
        _collect_query(combined, found, seen)


def _collect_node(node: Any, found: set[str], seen: set[int]) -> None:
    """Find the subqueries inside a where-tree or an expression."""
    if node is None or isinstance(node, (str, int, float, bool)) or id(node) in seen:
        return
    if isinstance(node, Query):
        _collect_query(node, found, seen)
        return
    seen.add(id(node))
    inner = getattr(node, "query", None)  # Subquery, Exists
    if isinstance(inner, Query):
        _collect_query(inner, found, seen)
    children = list(getattr(node, "children", ()))  # WhereNode
    children += [getattr(node, "lhs", None), getattr(node, "rhs", None)]  # lookups
    if hasattr(node, "get_source_expressions"):
        children += node.get_source_expressions()
    if isinstance(getattr(node, "rhs", None), (list, tuple)):
        children += list(node.rhs)
    for child in children:
        _collect_node(child, found, seen)


def model_of_table(table: str) -> Any:
    """The installed model stored in ``table`` (None if there is none)."""
    for model in apps.get_models(include_auto_created=True):
        if model._meta.db_table == table:
            return model
    return None


def many_to_many_tables(model: Any) -> set[str]:
    """The ``through`` tables of ``model``'s many-to-many fields, forward (``User.groups``)
    and reverse (``Group.user_set``): adding a group to a user changes no user row, yet a
    serializer showing ``groups`` now reads other data."""
    found: set[str] = set()
    for field in model._meta.get_fields():
        if not field.many_to_many:
            continue
        through = getattr(field, "through", None) or field.remote_field.through
        # Not a lazy reference to an uninstalled model:
        if isinstance(through, type) and issubclass(through, Model):
            found.add(through._meta.db_table)
    found.discard(model._meta.db_table)
    return found


def followed_tables(
    consumer_class: type, queryset: QuerySet[Any] | Query, many_to_many: bool = False
) -> list[str]:
    """The observed tables besides its own that ``queryset`` reads, sorted; a joined table
    without triggers is logged once per consumer class and left out. ``many_to_many``:
    also the observed ``through`` tables of the model's many-to-many fields, silently
    left out when unobserved (most serializers show none of them)."""
    observed = registry.observed_tables()
    tables = sorted(joined_tables(queryset))
    if many_to_many:
        through = many_to_many_tables(queryset.model) & observed.keys()
        tables = sorted(set(tables) | through)
    for table in tables:
        if table not in observed and (consumer_class, table) not in _warned:
            _warned.add((consumer_class, table))
            model = model_of_table(table)
            label = model._meta.label if model is not None else table
            logger.warning(
                "%s reads %s (%s), which pgobserve does not observe: a change there does "
                "not re-check what its sockets watch until their own rows change. Add "
                '"%s" to PGOBSERVE["MODELS"] and run `manage.py pgobserve install`, or set '
                "observe_related = False on the consumer to silence this.",
                consumer_class.__name__, table, label, label,
            )  # fmt: skip
    return [table for table in tables if table in observed]
