"""Stage timestamps of a push inside daphne (bench only: ``BENCH_TRACE=1``, read by
``bench/bench_path.py`` through ``GET /gcprobe/trace/``).

Wraps, without changing what they do, the points a single-row change passes in the daphne
process with the in-process listener: the listener accepting the notification, the hub
handing the group message to its consumers, the consumer's flush task starting, the re-read
entering and leaving the thread that runs it (on the kept connection), and the frame handed
to daphne. Each records ``(stage, time.time())``; the bench lines them up per change.
"""

from __future__ import annotations

import functools
import time
from contextlib import contextmanager

STAMPS: list[tuple[str, float]] = []


def _stamp(stage: str, method):
    if hasattr(method, "__wrapped_by_trace__"):
        return method

    if _is_coroutine(method):

        @functools.wraps(method)
        async def stamped(*args, **kwargs):
            STAMPS.append((stage, time.time()))
            return await method(*args, **kwargs)

    else:

        @functools.wraps(method)
        def stamped(*args, **kwargs):
            STAMPS.append((stage, time.time()))
            return method(*args, **kwargs)

    stamped.__wrapped_by_trace__ = True
    return stamped


def _is_coroutine(function) -> bool:
    import inspect

    return inspect.iscoroutinefunction(function)


def install() -> None:
    from pgobserve import consumers, feed_connection, hub, intake, watches

    intake.Gate.accept = _stamp("notify received", intake.Gate.accept)
    hub.Hub.deliver = _stamp("hub delivers", hub.Hub.deliver)
    watches.WatchRegistry._flush = _stamp("flush starts", watches.WatchRegistry._flush)
    consumers.AsyncAPIConsumer._send_text = _stamp(
        "frame to daphne", consumers.AsyncAPIConsumer._send_text
    )
    kept = feed_connection.kept_connection

    @contextmanager
    def stamped_kept(alias, *options):
        STAMPS.append(("read starts (thread)", time.time()))
        with kept(alias, *options):
            yield
        STAMPS.append(("read ends (thread)", time.time()))

    feed_connection.kept_connection = stamped_kept
    reads = feed_connection.reads

    def stamped_reads(read, alias=None, **options):
        run = reads(read, alias, **options)

        async def read_and_stamp(*args, **kwargs):
            result = await run(*args, **kwargs)
            STAMPS.append(("loop has the rows", time.time()))
            return result

        return read_and_stamp

    feed_connection.reads = stamped_reads
    consumers.AsyncAPIConsumer.feed_reply = _stamp(
        "feed_reply starts", consumers.AsyncAPIConsumer.feed_reply
    )


def take() -> list[tuple[str, float]]:
    taken = list(STAMPS)
    STAMPS.clear()
    return taken
