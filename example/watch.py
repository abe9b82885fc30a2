"""Subscribe to one row and print every message: ``python example/watch.py WS_URL PK``.

python example/watch.py ws://127.0.0.1:8000/ws/tasks/ 1
"""

import asyncio
import json
import sys

import websockets


async def main(url: str, pk: str) -> None:
    async with websockets.connect(url) as ws:
        value = int(pk) if pk.isdigit() else pk
        key = "slug" if "/projects/" in url else "pk"
        await ws.send(json.dumps({"action": "retrieve", key: value, "request_id": 1}))
        await ws.send(json.dumps({"action": "subscribe_instance", key: value, "request_id": 2}))
        async for message in ws:
            print(message, flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    try:
        asyncio.run(main(sys.argv[1], sys.argv[2]))
    except KeyboardInterrupt:
        pass
