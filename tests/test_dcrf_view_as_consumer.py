"""DCRF's ``view_as_consumer`` tests (upstream tests/test_django_view_consumer.py), on
pgobserve, then what DCRF gets wrong: ``data`` never reaches a DRF view's
``request.data``, ``request.get_host()`` raises ``KeyError: 'SERVER_NAME'`` (both checked
against DCRF 1.3.0), and its one shared consumer instance mixes up the sockets' scopes."""

from __future__ import annotations

import logging

import pytest
from django.http import HttpResponse
from rest_framework import status, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from pgobserve.consumers import view_as_consumer
from tests.dcrf_support import ask, connected_communicator

pytestmark = pytest.mark.django_db(transaction=True)


def envelope(action, data, status_code=200, request_id=1, errors=None) -> dict:
    return {
        "errors": errors or [],
        "data": data,
        "action": action,
        "response_status": status_code,
        "request_id": request_id,
    }


# Upstream ---------------------------------------------------------------------------------


async def test_view_as_consumer():
    results = {}

    class TestView(APIView):
        def get(self, request, format=None):
            results["TestView-get"] = True
            return Response(["test1", "test2"])

    async with connected_communicator(view_as_consumer(TestView.as_view())) as communicator:
        response = await ask(communicator, {"action": "retrieve", "request_id": 1})
        assert "TestView-get" in results
        assert response == envelope("retrieve", ["test1", "test2"])


async def test_view_as_consumer_get_params():
    results = {}

    class TestView(APIView):
        def get(self, request, format=None):
            results["TestView-get"] = True
            return Response(self.request.GET)

    async with connected_communicator(view_as_consumer(TestView.as_view())) as communicator:
        message = {"action": "retrieve", "request_id": 1, "query": {"value": 1, "othervalue": 42}}
        response = await ask(communicator, message)
        assert "TestView-get" in results
        assert response == envelope("retrieve", {"value": 1, "othervalue": 42})


async def test_view_as_consumer_get_url_params():
    results = {}

    class TestView(viewsets.ViewSet):
        def retrieve(self, request, pk, *args, **kwargs):
            results["TestView-retrieve"] = pk
            return Response(self.request.GET)

    app = view_as_consumer(TestView.as_view({"get": "retrieve"}))
    async with connected_communicator(app) as communicator:
        message = {"action": "retrieve", "request_id": 1, "parameters": {"pk": 42}}
        response = await ask(communicator, message)
        assert results["TestView-retrieve"] == 42
        assert response == envelope("retrieve", {})


# Beyond upstream --------------------------------------------------------------------------


class EchoView(APIView):
    """Answers with what the view was given."""

    def put(self, request):
        return Response({"method": "PUT", "data": request.data}, status=status.HTTP_201_CREATED)

    def patch(self, request):
        return Response({"method": "PATCH", "data": request.data})

    def get(self, request):
        return Response(
            {
                "uri": request.build_absolute_uri(),
                "user": str(request.user),
                "list": request.GET.getlist("many"),
            }
        )


async def test_data_reaches_request_data_and_the_request_has_its_headers():
    app = view_as_consumer(EchoView.as_view())
    headers = [(b"host", b"example.com"), (b"origin", b"http://example.com")]
    async with connected_communicator(app, "/ws/echo/", headers) as ws:
        message = {"action": "create", "request_id": 1, "data": {"title": "t", "n": [1, 2]}}
        assert await ask(ws, message) == envelope(
            "create", {"method": "PUT", "data": {"title": "t", "n": [1, 2]}}, 201
        )
        message = {"action": "update", "request_id": 2, "data": {"done": True}}
        assert await ask(ws, message) == envelope(
            "update", {"method": "PATCH", "data": {"done": True}}, 200, 2
        )
        message = {"action": "list", "request_id": 3, "query": {"many": ["a", "b"]}}
        assert await ask(ws, message) == envelope(
            "list",
            {"uri": "http://example.com/ws/echo/", "user": "AnonymousUser", "list": ["a", "b"]},
            200,
            3,
        )


async def test_bad_input_and_failing_views_get_envelopes(caplog):
    class Failing(APIView):
        def get(self, request, **kwargs):
            if kwargs:
                raise RuntimeError("the view failed")
            return HttpResponse("plain text, not JSON")

    app = view_as_consumer(Failing.as_view(), {"fetch": "GET"})
    async with connected_communicator(app) as ws:
        assert await ask(ws, {"action": "fetch", "request_id": 1}) == envelope(
            "fetch", "plain text, not JSON"
        )
        assert await ask(ws, {"action": "retrieve", "request_id": 2}) == envelope(
            "retrieve", None, 405, 2, ['Method "retrieve" not allowed.']
        )
        for key in ("query", "parameters"):
            assert await ask(ws, {"action": "fetch", "request_id": 3, key: [1]}) == envelope(
                "fetch", None, 400, 3, [{key: ["Expected an object."]}]
            )
        message = {"action": "fetch", "request_id": 4, "parameters": {"request": 1}}
        assert await ask(ws, message) == envelope(
            "fetch", None, 400, 4, [{"parameters": [{"request": ["Unexpected field."]}]}]
        )
        with caplog.at_level(logging.ERROR, logger="pgobserve"):
            message = {"action": "fetch", "request_id": 5, "parameters": {"x": 1}}
            assert await ask(ws, message) == envelope(
                "fetch", None, 500, 5, ["A server error occurred."]
            )
        # The socket is still open and serving.
        assert (await ask(ws, {"action": "fetch", "request_id": 6}))["response_status"] == 200


async def test_each_socket_has_its_own_consumer():
    """DCRF returns one consumer instance: the second socket's connect overwrote the first
    one's scope, so the first socket's requests ran with the second's path and user."""

    class PathView(APIView):
        def get(self, request):
            return Response(request.path)

    app = view_as_consumer(PathView.as_view())
    async with (
        connected_communicator(app, "/first/") as first,
        connected_communicator(app, "/second/") as second,
        connected_communicator(app.as_asgi(), "/third/") as third,  # DCRF code may say so
    ):
        for socket, path in ((first, "/first/"), (second, "/second/"), (third, "/third/")):
            assert (await ask(socket, {"action": "list", "request_id": 1}))["data"] == path
