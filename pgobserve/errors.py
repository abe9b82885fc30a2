"""The errors a client is answered with, in one place (internal).

Django's exceptions become DRF's here and nowhere else (``api_exception``): the consumer's
error replies and the filters' errors use it, so the same mistake gets the same status and
words wherever it is made. Messages follow DRF's style: a sentence with a capital letter
and a full stop (``"This field is required."``), except DCRF's ``"Not found"``, kept as
DCRF clients match it.
"""

from __future__ import annotations

from typing import overload

from django.core import exceptions as django_exceptions
from django.http import Http404
from rest_framework import exceptions
from rest_framework.fields import get_error_detail

__all__: list[str] = []  # internal: no public API

#: DCRF's words for a 404 (DRF's ``NotFound`` says "Not found.").
NOT_FOUND = "Not found"


class BadRequest(exceptions.ValidationError):
    """400 for malformed client input (the ``ValidationError`` shape DCRF clients know)."""


def required(field: str) -> BadRequest:
    """400 naming a missing field, in DRF's words."""
    return BadRequest({field: ["This field is required."]})


@overload
def api_exception(
    exc: exceptions.APIException
    | Http404
    | django_exceptions.PermissionDenied
    | django_exceptions.ValidationError,
) -> exceptions.APIException: ...


@overload
def api_exception(exc: BaseException) -> exceptions.APIException | None: ...


def api_exception(exc: BaseException) -> exceptions.APIException | None:
    """The DRF exception a client is answered with for ``exc``; None when the client did
    not cause it (the database is down: 503; a bug: 500, logged).

    DRF's exceptions stay as they are; Django's ``Http404`` becomes a 404, its
    ``PermissionDenied`` a 403 and its ``ValidationError`` a 400 with the same messages
    (per field for a ``ValidationError`` of a dict, as a serializer's). As in DRF,
    ``ObjectDoesNotExist`` is not a 404: a ``.get()`` that fails inside an action is a bug
    until the action says otherwise (``get_object_or_404``).
    """
    if isinstance(exc, exceptions.APIException):
        return exc
    if isinstance(exc, Http404):
        return exceptions.NotFound(NOT_FOUND)
    if isinstance(exc, django_exceptions.PermissionDenied):
        return exceptions.PermissionDenied()
    if isinstance(exc, django_exceptions.ValidationError):
        return exceptions.ValidationError(get_error_detail(exc))
    return None
