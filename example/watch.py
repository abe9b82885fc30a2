"""Subscribe to one row and print every message: ``python example/watch.py WS_URL PK``.

    python example/watch.py ws://127.0.0.1:8000/ws/tasks/ 1
    python example/watch.py ws://127.0.0.1:8000/ws/projects/ demo    # by slug
    python example/watch.py --user ada --password ada ws://127.0.0.1:8000/ws/tasks/ 6

The example's sockets need a login: it logs in on the same server's ``/login/`` page
(demo / demo unless told otherwise) and opens the socket with that session cookie. It
exits with a message and status 1 when the server is not there or goes away, 0 on Ctrl-C.
"""

import argparse
import asyncio
import http.cookiejar
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

import websockets


class Failed(Exception):
    """Something the user should read, without a traceback."""


def login(ws_url: str, username: str, password: str) -> str:
    """Log in on the server of ``ws_url`` as Django's login form does; the session cookie."""
    parts = urllib.parse.urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    page = f"{scheme}://{parts.netloc}/login/"
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    try:
        form = opener.open(page, timeout=10).read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
        if token is None:
            raise Failed(f"{page} has no login form")
        data = urllib.parse.urlencode(
            {"username": username, "password": password, "csrfmiddlewaretoken": token[1]}
        ).encode()
        opener.open(urllib.request.Request(page, data, headers={"Referer": page}), timeout=10)
    except (urllib.error.URLError, OSError) as exc:
        raise Failed(f"cannot reach {page}: {getattr(exc, 'reason', exc)}") from None
    session = next((c.value for c in jar if c.name == "sessionid"), None)
    if session is None:
        raise Failed(f"logging in as {username!r} failed: check --user and --password")
    return f"sessionid={session}"


async def watch(url: str, pk: str, cookie: str | None) -> None:
    value = int(pk) if pk.isdigit() else pk
    key = "slug" if "/projects/" in url else "pk"
    headers = {"Cookie": cookie} if cookie else {}
    try:
        ws = await websockets.connect(url, additional_headers=headers)
    except (OSError, websockets.InvalidHandshake) as exc:
        raise Failed(f"cannot open {url}: {exc}") from None
    async with ws:
        await ws.send(json.dumps({"action": "retrieve", key: value, "request_id": 1}))
        await ws.send(json.dumps({"action": "subscribe_instance", key: value, "request_id": 2}))
        try:
            async for message in ws:
                print(message, flush=True)
        except websockets.ConnectionClosedError:
            pass  # reported below, as a clean close is
    why = f"code {ws.close_code}" if ws.close_code else "no close frame"
    raise Failed(f"the server closed the connection ({why}): is the demo still running?")


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Subscribe to one row over a pgobserve WebSocket and print every message."
    )
    parser.add_argument("url", help="e.g. ws://127.0.0.1:8000/ws/tasks/")
    parser.add_argument("pk", help="the row's pk (a slug for /ws/projects/)")
    parser.add_argument("--user", default="demo", help="log in as (default: demo)")
    parser.add_argument("--password", default="demo", help="(default: demo)")
    parser.add_argument("--anonymous", action="store_true", help="do not log in")
    args = parser.parse_args()
    if not args.url.startswith(("ws://", "wss://")):
        parser.error(f"the URL must start with ws:// or wss://, e.g. ws://127.0.0.1:8000/ws/tasks/ "
                     f"(got {args.url!r})")  # fmt: skip
    try:
        cookie = None if args.anonymous else login(args.url, args.user, args.password)
        asyncio.run(watch(args.url, args.pk, cookie))
    except Failed as exc:
        print(f"watch.py: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
