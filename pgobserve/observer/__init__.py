"""DCRF's ``djangochannelsrestframework.observer``, on pgobserve: ``model_observer`` fed by
the database triggers (every write, from anywhere), ``observer`` for Django signals."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from django.db.models import Model
from django.dispatch import Signal
from rest_framework.serializers import Serializer

from .model_observer import Action, ModelObserver
from .observer import Observer

__all__ = ["Action", "ModelObserver", "Observer", "model_observer", "observer"]


def observer(signal: Signal, **kwargs: Any) -> Callable[[Callable[..., Any]], Observer]:
    """Method decorator: events of ``signal`` (``signal.connect`` gets ``kwargs``, e.g.
    ``sender=``). In-process, as with DCRF: see ``observer.py``."""
    return partial(Observer, signal=signal, kwargs=kwargs)


def model_observer(
    model: type[Model],
    serializer_class: type[Serializer[Any]] | None = None,
    many_to_many: bool = False,
    **kwargs: Any,
) -> Callable[[Callable[..., Any]], ModelObserver]:
    """Method decorator: every created, updated and deleted row of ``model``, however it
    was written. The method is called on each subscribed consumer with
    ``(message, observer=, action=, message_type=, subscribing_request_ids=, group=)``."""
    return partial(
        ModelObserver,
        model_cls=model,
        serializer_class=serializer_class,
        many_to_many=many_to_many,
        **kwargs,
    )
