"""``@action``: mark a consumer method as callable from the socket, as DCRF's ``@action``."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction

__all__ = ["action", "detached"]


def action(
    atomic: bool | None = None, detached: bool = False, **kwargs: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Expose a method as an action named after it (or ``name=``).

    Sync methods run in a thread through ``database_sync_to_async``, inside
    ``transaction.atomic`` when ``atomic=True`` (default: the default database's
    ``ATOMIC_REQUESTS``). ``detached=True`` runs an async action as its own task, so the
    socket keeps handling messages meanwhile; its reply is sent when it finishes.
    """

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        wrapped: Callable[..., Any]
        if asyncio.iscoroutinefunction(func):
            if atomic:
                raise ValueError("only synchronous actions can be atomic")
            wrapped = _detach(func) if detached else func
        else:
            if detached:
                raise ValueError("only asynchronous actions can be detached")
            use_atomic = atomic
            if use_atomic is None:
                use_atomic = settings.DATABASES.get("default", {}).get("ATOMIC_REQUESTS", False)
            body = transaction.atomic(func) if use_atomic else func

            @functools.wraps(func)
            async def in_thread(self: Any, *args: Any, **call_kwargs: Any) -> Any:
                return await database_sync_to_async(body)(self, *args, **call_kwargs)

            wrapped = in_thread
        # What APIConsumerMetaclass looks for.
        wrapped.__dict__.update(action=True, kwargs=kwargs)
        return wrapped

    return decorator


def _detach(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    async def run_detached(self: Any, *args: Any, **kwargs: Any) -> None:
        async def body() -> None:
            name, request_id = kwargs.get("action"), kwargs.get("request_id")
            try:
                response = await func(self, *args, **kwargs)
                if isinstance(response, tuple):
                    data, status = response
                    await self.reply(action=name, data=data, status=status, request_id=request_id)
            except Exception as exc:
                await self.handle_exception(exc, action=name, request_id=request_id)

        self.start_detached(body())

    return run_detached


def detached(func: Callable[..., Any]) -> Callable[..., Any]:
    """Run an async method as a task of its own; it is cancelled when the socket closes."""

    @functools.wraps(func)
    async def run_detached(self: Any, *args: Any, **kwargs: Any) -> None:
        self.start_detached(func(self, *args, **kwargs))

    return run_detached
