"""The garbage that closed sockets leave, collected in step with the closes (docs/realtime.md,
"Capacity").

The ASGI process raises the collector's thresholds (ASGI_GC_THRESHOLDS) so that full
collections, which visit every object of every open socket, stop in steady state. What that
traded: a closed socket leaves ~100 objects in reference cycles (daphne's protocol, Twisted's
transport, autobahn's state), and those of a socket that outlived a young collection wait in an
older generation, which the raised thresholds reach rarely: 8,190 sockets opened and closed in
40 s (drill 14) left 170 MiB behind. So once as many sockets closed as are open (and at least
COLLECT_AFTER_CLOSES), a full collection runs: its cost, proportional to the open sockets and
the garbage, is spread over as many closes; none runs while no socket closes; and the garbage
waiting is at most about what the open sockets hold.
"""

import gc

COLLECT_AFTER_CLOSES = 500


class CollectClosedSockets:
    """ASGI middleware around the WebSocket application: counts the sockets open (authenticated
    or not: /metrics shows it) and those closed since the last full collection, and runs one
    when enough closed. The counts are the process's, as the collector is."""

    open = 0
    closed = 0

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        counts = CollectClosedSockets
        counts.open += 1
        try:
            return await self.application(scope, receive, send)
        finally:
            counts.open -= 1
            counts.closed += 1
            if counts.closed >= max(COLLECT_AFTER_CLOSES, counts.open):
                counts.closed = 0
                gc.collect()
