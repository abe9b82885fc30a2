"""Permissions for WebSocket actions, DCRF-compatible: ``has_permission`` and ``can_connect``.

A permission answers two questions: may this socket connect (``can_connect``), and may it
run this action (``has_permission(scope, consumer, action, **kwargs)``). pgobserve also
asks ``has_permission`` before every push, with ``action="update"`` or ``"delete"`` and
``pk=<the row's pk>``; a False there withholds the push (DCRF sends it anyway).

Classes combine with ``&``, ``|`` and ``~``; DRF permission classes are accepted and
wrapped (their ``request.method`` is derived from the action name, as in DCRF).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from django.http import HttpRequest
from rest_framework.permissions import AND as DRF_AND
from rest_framework.permissions import NOT as DRF_NOT
from rest_framework.permissions import OR as DRF_OR
from rest_framework.permissions import BasePermission as DRFBasePermission

if TYPE_CHECKING:
    from ._types import HasPermissions
    from .consumers import AsyncAPIConsumer

__all__ = ["BasePermission", "AllowAny", "IsAuthenticated", "WrappedDRFPermission"]


def ensure_async(method: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """Run a sync method (which may touch the database) through ``database_sync_to_async``."""
    if asyncio.iscoroutinefunction(method):
        return method
    return database_sync_to_async(method)


def request_from_scope(scope: dict[str, Any]) -> HttpRequest:
    """An ``HttpRequest`` standing for the socket's handshake (for DRF permissions and
    ``view_as_consumer``): its path, user, session, cookies and headers (under Django's
    ``META`` names and, as DCRF has them, raw)."""
    from django.contrib.auth.models import AnonymousUser

    request = HttpRequest()
    request.path = request.path_info = scope.get("path", "")
    # None without channels' SessionMiddleware (Django's stubs know only a SessionBase).
    request.session = scope.get("session")  # type: ignore[assignment]
    user = scope.get("user")
    request.user = AnonymousUser() if user is None else user
    meta = request.META
    meta["PATH_INFO"] = request.path
    meta["SCRIPT_NAME"] = scope.get("root_path", "")
    if scope.get("client"):
        meta["REMOTE_ADDR"], meta["REMOTE_PORT"] = scope["client"][0], scope["client"][1]
    if scope.get("server"):
        meta["SERVER_NAME"], meta["SERVER_PORT"] = scope["server"][0], str(scope["server"][1])
    for raw_name, raw_value in scope.get("headers", []):
        name, value = raw_name.decode("latin1"), raw_value.decode("latin1")
        meta[name] = value  # DCRF's key
        key = "HTTP_" + name.upper().replace("-", "_")
        if key in meta:  # a repeated header: one value, as Django's ASGI handler joins them
            value = meta[key] + ("; " if key == "HTTP_COOKIE" else ",") + value
        meta[key] = value
    # JSON, whatever the browser's handshake accepted.
    meta["HTTP_ACCEPT"] = meta["HTTP_CONTENT_TYPE"] = "application/json"
    if scope.get("cookies"):
        request.COOKIES = dict(scope["cookies"])
    return request


class _Operators:
    """``&``, ``|`` and ``~`` on permission classes, giving classes (as DRF does)."""

    def __and__(self, other: Any) -> _Combined:
        return _Combined(_And, self, other)

    def __or__(self, other: Any) -> _Combined:
        return _Combined(_Or, self, other)

    def __rand__(self, other: Any) -> _Combined:
        return _Combined(_And, other, self)

    def __ror__(self, other: Any) -> _Combined:
        return _Combined(_Or, other, self)

    def __invert__(self) -> _Combined:
        return _Combined(_Not, self)


class _Combined(_Operators):
    """A not-yet-instantiated combination; calling it builds the permission instance."""

    def __init__(self, operator: type, *operands: Any) -> None:
        self.operator = operator
        self.operands = operands

    def __call__(self) -> BasePermission:
        return self.operator(*(instantiate(op) for op in self.operands))


# `|` on these classes combines permissions, not types into a `types.UnionType`: type's
# `__or__` is overridden on purpose (DRF's stubs ignore the same error on their metaclass).
class _PermissionMeta(_Operators, type):  # type: ignore[misc]
    pass


class BasePermission(metaclass=_PermissionMeta):
    """Override ``has_permission`` (every action, every push) and maybe ``can_connect``."""

    async def has_permission(
        self, scope: dict[str, Any], consumer: AsyncAPIConsumer, action: str, **kwargs: Any
    ) -> bool:
        return False

    async def can_connect(
        self, scope: dict[str, Any], consumer: AsyncAPIConsumer, message: Any = None
    ) -> bool:
        return True


class _And(BasePermission):
    def __init__(self, op1: BasePermission, op2: BasePermission) -> None:
        self.op1, self.op2 = op1, op2

    async def has_permission(
        self, scope: dict[str, Any], consumer: AsyncAPIConsumer, action: str, **kwargs: Any
    ) -> bool:
        return bool(
            await self.op1.has_permission(scope, consumer, action, **kwargs)
            and await self.op2.has_permission(scope, consumer, action, **kwargs)
        )

    async def can_connect(
        self, scope: dict[str, Any], consumer: AsyncAPIConsumer, message: Any = None
    ) -> bool:
        return bool(
            await self.op1.can_connect(scope, consumer, message)
            and await self.op2.can_connect(scope, consumer, message)
        )


class _Or(_And):
    async def has_permission(
        self, scope: dict[str, Any], consumer: AsyncAPIConsumer, action: str, **kwargs: Any
    ) -> bool:
        return bool(
            await self.op1.has_permission(scope, consumer, action, **kwargs)
            or await self.op2.has_permission(scope, consumer, action, **kwargs)
        )

    async def can_connect(
        self, scope: dict[str, Any], consumer: AsyncAPIConsumer, message: Any = None
    ) -> bool:
        return bool(
            await self.op1.can_connect(scope, consumer, message)
            or await self.op2.can_connect(scope, consumer, message)
        )


class _Not(BasePermission):
    def __init__(self, op1: BasePermission) -> None:
        self.op1 = op1

    async def has_permission(
        self, scope: dict[str, Any], consumer: AsyncAPIConsumer, action: str, **kwargs: Any
    ) -> bool:
        return not await self.op1.has_permission(scope, consumer, action, **kwargs)

    async def can_connect(
        self, scope: dict[str, Any], consumer: AsyncAPIConsumer, message: Any = None
    ) -> bool:
        return not await self.op1.can_connect(scope, consumer, message)


class AllowAny(BasePermission):
    """Everyone may connect and run every action."""

    async def has_permission(
        self, scope: dict[str, Any], consumer: AsyncAPIConsumer, action: str, **kwargs: Any
    ) -> bool:
        return True


def may_refuse(consumer: HasPermissions) -> bool:
    """Whether a push permission of ``consumer`` could refuse (anything but ``AllowAny``)."""
    return not all(
        permission is AllowAny or isinstance(permission, AllowAny)
        for permission in consumer.permission_classes
    )


class IsAuthenticated(BasePermission):
    """Only a logged-in user (``scope["user"]``, set by ``AuthMiddlewareStack``).

    Connecting stays allowed, as in DCRF: an anonymous socket gets 403 per action.
    """

    async def has_permission(
        self, scope: dict[str, Any], consumer: AsyncAPIConsumer, action: str, **kwargs: Any
    ) -> bool:
        user = scope.get("user")
        return bool(user is not None and user.pk and user.is_authenticated)


class WrappedDRFPermission(BasePermission):
    """A DRF permission used on a socket; the fake request's method comes from the action."""

    mapped_actions = {
        "create": "PUT",
        "update": "PATCH",
        "list": "GET",
        "retrieve": "GET",
        "connect": "HEAD",
    }

    def __init__(self, permission: DRFBasePermission) -> None:
        self.permission = permission

    async def has_permission(
        self, scope: dict[str, Any], consumer: AsyncAPIConsumer, action: str, **kwargs: Any
    ) -> bool:
        request = request_from_scope(scope)
        request.method = self.mapped_actions.get(action, str(action).upper())
        return bool(await ensure_async(self.permission.has_permission)(request, consumer))

    async def can_connect(
        self, scope: dict[str, Any], consumer: AsyncAPIConsumer, message: Any = None
    ) -> bool:
        request = request_from_scope(scope)
        request.method = self.mapped_actions["connect"]
        return bool(await ensure_async(self.permission.has_permission)(request, consumer))


def instantiate(permission: Any) -> BasePermission:
    """An instance of ``permission``: a pgobserve or DRF class, a combination, or an instance."""
    if isinstance(permission, BasePermission):
        return permission
    if isinstance(permission, type) and issubclass(permission, BasePermission):
        return permission()  # the common case, checked before every push: no more tests
    if isinstance(permission, DRFBasePermission) or _is_drf_operator(permission):
        return WrappedDRFPermission(permission)
    if isinstance(permission, type) and issubclass(permission, DRFBasePermission):
        return WrappedDRFPermission(permission())
    instance = permission()
    if isinstance(instance, DRFBasePermission) or _is_drf_operator(instance):
        return WrappedDRFPermission(instance)
    return instance


def _is_drf_operator(obj: Any) -> bool:
    return isinstance(obj, (DRF_AND, DRF_OR, DRF_NOT))
