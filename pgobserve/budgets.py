"""Per-socket budgets: how much one socket may make the server hold (internal).

Every subscription costs memory for as long as the socket lives, and every held row costs
a read and a push on each change: without a bound, one anonymous socket with 150 query
subscriptions of 1,000 rows turned a 1,000-row UPDATE into 150,000 pushes and made every
other client seconds late. A consumer class may set ``max_subscriptions`` / ``max_rows``;
otherwise ``PGOBSERVE["MAX_SUBSCRIPTIONS_PER_SOCKET"]`` / ``["MAX_ROWS_PER_SOCKET"]``
apply. Budgets are checked when subscribing: a live result may grow past them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rest_framework import exceptions

from . import conf

if TYPE_CHECKING:
    from ._types import HasWatches

__all__: list[str] = []  # internal: no public API


class OverBudget(exceptions.APIException):
    """429: the subscription would take the socket past one of its budgets."""

    status_code = 429
    default_detail = "This socket has too many subscriptions."


def ensure_room(consumer: HasWatches, subscriptions: int, rows: int) -> None:
    """Raise ``OverBudget`` unless ``consumer`` may take ``subscriptions`` more subscriptions
    and ``rows`` more held rows (either may be negative when a subscription is replaced)."""
    held_subscriptions, held_rows = consumer.watches.totals()
    max_subscriptions = _budget(consumer, "max_subscriptions", conf.max_subscriptions)
    if subscriptions > 0 and held_subscriptions + subscriptions > max_subscriptions:
        raise OverBudget(
            f"This socket has {held_subscriptions} subscriptions, the most it may have "
            f"is {max_subscriptions}; unsubscribe first."
        )
    max_rows = _budget(consumer, "max_rows", conf.max_rows)
    if rows > 0 and held_rows + rows > max_rows:
        raise OverBudget(
            f"This socket holds {held_rows} rows; {rows} more would pass its budget of "
            f"{max_rows}. Narrow the filters or unsubscribe first."
        )


def _budget(consumer: object, attribute: str, setting: Callable[[], int]) -> int:
    """The consumer class's own budget if it sets one (0 included), else the setting."""
    value = getattr(consumer, attribute, None)
    return setting() if value is None else value
