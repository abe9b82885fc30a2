"""``@observer(signal)``: events of any Django signal, as in DCRF.

A signal is sent inside one process, so this observer stays in-process, as DCRF's is:
the process that sends the signal serializes the event and sends it to its groups on the
channel layer, which reaches the subscribed consumers of every process. (Database
changes made anywhere are ``model_observer``'s job.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from copy import deepcopy
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.dispatch import Signal

from .base_observer import BaseObserver

__all__ = ["Observer"]


class Observer(BaseObserver):
    """What ``@observer(signal)`` makes of a consumer method (see the module doc)."""

    def __init__(
        self,
        func: Callable[..., Any],
        signal: Signal,
        kwargs: dict[str, Any] | None = None,
        partition: str = "*",
    ) -> None:
        super().__init__(func, partition=partition)
        self.signal = signal
        self.signal_kwargs = kwargs or {}
        # A weak receiver: it lives as long as the consumer class that holds this observer.
        self.signal.connect(self.handle, **self.signal_kwargs)

    def handle(self, signal: Signal, *args: Any, **kwargs: Any) -> None:
        """The signal's receiver: send the serialized event to each of its groups."""
        message = self.serialize(signal, *args, **kwargs)
        layer = get_channel_layer()
        for name in self.group_names_for_signal(*args, message=message, **kwargs):
            async_to_sync(layer.group_send)(name, {**deepcopy(message), "group": name})

    def serialize(self, signal: Signal, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The event message (without its group): the observer's ``serializer``, else an
        empty body. (A model observer's takes a row and an ``Action`` instead.)"""
        body = self._serializer(self, signal, *args, **kwargs) if self._serializer else {}
        return {"type": self.message_type, "body": body}

    def group_names(self, *args: Any, **kwargs: Any) -> Iterator[str]:
        yield f"{self._stable_observer_id}-{self.message_type}-signal"
