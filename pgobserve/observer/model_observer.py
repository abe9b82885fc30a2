"""``@model_observer(Model)``: every change of a model's rows, from the trigger feed.

DCRF's model observer listens to Django's signals, so it misses ``update()``, bulk
operations, raw SQL and other processes. This one is fed by the listener, which sees
every committed change: for each changed row it computes the groups the row was in
before the change (from the row as it was, kept by the trigger in ``sql.OLD_ROWS``) and
after it (from the row as it is now), and sends, as DCRF does, ``delete`` to the groups
the row left, ``update`` to those it stayed in and ``create`` to those it joined, each
body serialized once per event (``observer/feed.py``). Consumers subscribe to groups as
with DCRF.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Iterator
from enum import Enum
from typing import Any

from django.db.models import Model
from rest_framework.serializers import Serializer

from .. import registry
from .base_observer import BaseObserver

__all__ = ["Action", "ModelObserver"]


class Action(Enum):
    """What happened to a row, as a model observer's ``action`` argument (DCRF's)."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


#: Every model observer defined in this process (consumer classes hold them; a class that
#: is garbage collected takes its observers along). The listener's feed reads it.
_live: weakref.WeakSet[ModelObserver] = weakref.WeakSet()


def live_observers() -> list[ModelObserver]:
    return list(_live)


class ModelObserver(BaseObserver):
    """What ``@model_observer(Model)`` makes of a consumer method (see the module doc)."""

    def __init__(
        self,
        func: Callable[..., Any],
        model_cls: type[Model],
        partition: str = "*",
        serializer_class: type[Serializer[Any]] | None = None,
        many_to_many: bool = False,
    ) -> None:
        super().__init__(func, partition=partition)
        self._serializer_class = serializer_class
        self._many_to_many_tracking = many_to_many
        self.model_cls = model_cls
        # The triggers of the model (and of its many-to-many tables) must keep old rows.
        registry.keep_old_rows(model_cls._meta.concrete_model or model_cls)
        for field in self.many_to_many_fields():
            registry.keep_old_rows(field.remote_field.through)
        _live.add(self)

    def many_to_many_fields(self) -> list[Any]:
        """The model's own many-to-many fields whose changes count as an ``update`` of its
        rows (with ``many_to_many=True``), as with DCRF."""
        if not self._many_to_many_tracking:
            return []
        return [f for f in self.model_cls._meta.many_to_many if f.remote_field.through]

    def group_names(self, *args: Any, **kwargs: Any) -> Iterator[str]:
        yield f"{self._stable_observer_id}-{self.message_type}-model-{self.model_label}"

    def serialize(self, instance: Model, action: Action, **kwargs: Any) -> dict[str, Any]:
        """The event message (without its group): the observer's ``serializer``, else the
        ``serializer_class``'s data, else ``{"pk": pk}``."""
        if self._serializer is not None:
            body = self._serializer(self, instance, action, **kwargs)
        elif self._serializer_class is not None:
            body = self._serializer_class(instance).data
        else:
            try:
                json.dumps(instance.pk)
                body = {"pk": instance.pk}
            except TypeError:
                body = {"pk": str(instance.pk)}
        return {"type": self.message_type, "body": body, "action": action.value}

    @property
    def model_label(self) -> str:
        meta = self.model_cls._meta
        return f"{meta.app_label}.{meta.object_name}".lower().replace("_", ".")
