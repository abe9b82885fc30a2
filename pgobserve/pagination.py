"""``WebsocketLimitOffsetPagination``: DCRF's limit/offset pagination of ``list`` replies.

The client sends ``"limit"`` and ``"offset"`` beside the action; the reply's data is
``{"count", "results", "limit", "offset"}``, as in DCRF. A value that is not a
non-negative integer falls back to the default (DCRF does so for text, but crashes the
socket on ``null`` or a list); a limit larger than the result reads only the rows there
are, so ``"limit": 1e300`` cannot reach PostgreSQL as an out-of-range ``LIMIT``.

Defaults come from ``PGOBSERVE["PAGE_SIZE"]`` (the limit when the client sends none;
``None``: no pagination) and ``PGOBSERVE["DEFAULT_PAGINATION_CLASS"]`` (the
``pagination_class`` of ``PaginatedModelListMixin``), DCRF's
``DJANGO_CHANNELS_REST_API`` keys of the same names. Both are read when this module and
``pgobserve.mixins`` are imported, as DCRF reads them.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string
from rest_framework.pagination import LimitOffsetPagination

__all__ = ["WebsocketLimitOffsetPagination"]


def page_size() -> int | None:
    """``PGOBSERVE["PAGE_SIZE"]``: the default limit of paginated lists (None: not paginated)."""
    return getattr(settings, "PGOBSERVE", {}).get("PAGE_SIZE")


def default_pagination_class() -> type | None:
    """``PGOBSERVE["DEFAULT_PAGINATION_CLASS"]`` (a class or a dotted path), else None."""
    value = getattr(settings, "PGOBSERVE", {}).get("DEFAULT_PAGINATION_CLASS")
    return import_string(value) if isinstance(value, str) else value


def _positive_int(value: Any, strict: bool = False, cutoff: int | None = None) -> int:
    """``value`` as an integer >= 0 (> 0 if ``strict``), at most ``cutoff``; ValueError or
    TypeError otherwise (DRF's helper, also refusing what ``int()`` cannot take)."""
    number = int(value)
    if number < 0 or (number == 0 and strict):
        raise ValueError(value)
    return min(number, cutoff) if cutoff else number


class WebsocketLimitOffsetPagination(LimitOffsetPagination):
    """Paginates by the message's ``limit`` and ``offset`` keys (DCRF's names and replies)."""

    default_limit = page_size()
    count: int
    limit: int | None
    offset: int

    # DCRF's API, not DRF's (so each override's `ignore[override]`): the socket's scope and
    # the message's keys stand for the request, and the reply's data for a Response.
    def get_paginated_response(self, data: Any) -> OrderedDict[str, Any]:  # type: ignore[override]
        return OrderedDict(
            [
                ("count", self.count),
                ("results", data),
                ("limit", self.limit),
                ("offset", self.offset),
            ]
        )

    def paginate_queryset(  # type: ignore[override]
        self, queryset: Any, scope: dict[str, Any], view: Any = None, **kwargs: Any
    ) -> list[Any] | None:
        """The page of ``queryset`` the message's ``limit``/``offset`` ask for; None when
        there is no limit (the list is not paginated)."""
        self.limit = self.get_limit(**kwargs)
        if self.limit is None:
            return None
        self.count = self.get_count(queryset)
        self.offset = self.get_offset(**kwargs)
        self.scope = scope
        if self.count > self.limit and self.template is not None:
            self.display_page_controls = True
        if self.count == 0 or self.offset > self.count:
            return []
        # Never past the rows there are: a huge limit is a short slice, not a huge LIMIT.
        return list(queryset[self.offset : self.offset + min(self.limit, self.count)])

    def get_limit(self, **kwargs: Any) -> int | None:  # type: ignore[override]
        """The message's ``limit`` (capped at ``max_limit``), else ``default_limit``."""
        if self.limit_query_param:
            try:
                return _positive_int(
                    kwargs.get("limit", self.default_limit), strict=True, cutoff=self.max_limit
                )
            except (TypeError, ValueError, OverflowError):
                pass
        return self.default_limit

    def get_offset(self, **kwargs: Any) -> int:  # type: ignore[override]
        """The message's ``offset``, else 0."""
        try:
            return _positive_int(kwargs.get("offset", 0))
        except (TypeError, ValueError, OverflowError):
            return 0
