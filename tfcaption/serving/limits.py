"""What one request and the whole server may hold: body size, examples per request, queue, time, memory.

- `max_body_bytes`: a larger request body is refused with HTTP 413 (checked on `Content-Length` and again
  while the body streams in, so a chunked body cannot get around it); a larger gRPC request message, by gRPC
  itself, with RESOURCE_EXHAUSTED.
- `max_images`: examples (images) in one request; more is INVALID_ARGUMENT (400).
- Pixels per image: the export's own `max_pixels` (tfcaption-export --max-pixels), which its decoder checks
  in the file header before decoding; a larger image is INVALID_ARGUMENT naming it, e.g.
  `image_bytes[0]: 20000x20000 pixels exceeds the limit of 40000000`.
- `request_timeout_s`: a request not answered by then gets DEADLINE_EXCEEDED (504) and leaves the queue.
- `max_queue`: examples waiting per signature; a request that would go beyond it gets UNAVAILABLE (503).
- `max_inflight_bytes`: request bodies held at once, across all requests (being read, queued, running);
  beyond it a request gets UNAVAILABLE (503) before its body is read, so many large concurrent requests
  cannot exhaust memory.
- `shutdown_timeout_s`: on SIGTERM the server stops accepting connections and gRPC calls and answers the
  requests and calls in flight, for at most this long.
"""

import contextlib
import dataclasses

from tfcaption.serving.rest import ServingError

MiB = 2 ** 20


@dataclasses.dataclass
class Limits:
    max_body_bytes: int = 32 * MiB
    max_images: int = 64
    request_timeout_s: float = 30.0
    max_queue: int = 512
    max_inflight_bytes: int = 512 * MiB
    shutdown_timeout_s: float = 30.0

    def __post_init__(self):
        for name in ("max_body_bytes", "max_images", "max_queue", "max_inflight_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.request_timeout_s <= 0 or self.shutdown_timeout_s < 0:
            raise ValueError("the request timeout must be > 0 and the shutdown timeout >= 0")
        if self.max_images > self.max_queue:
            raise ValueError(f"max_images ({self.max_images}) cannot exceed max_queue ({self.max_queue}): such a "
                             f"request could never be queued")
        if self.max_body_bytes > self.max_inflight_bytes:
            raise ValueError(f"max_body_bytes ({self.max_body_bytes}) cannot exceed max_inflight_bytes "
                             f"({self.max_inflight_bytes})")


class BodyBudget:
    """Bytes of request bodies held at once; `hold()` gives a request its share, returned when it is done.

    Only the event loop touches it (no lock needed).
    """

    def __init__(self, limit):
        self.limit = int(limit)
        self.held = 0
        self.peak = 0

    @contextlib.contextmanager
    def hold(self):
        holder = _Holder(self)
        try:
            yield holder
        finally:
            self.held -= holder.bytes
            holder.bytes = 0

    def _take(self, holder, count):
        if self.held + count > self.limit:
            raise ServingError(f"the server holds {self.held} bytes of request bodies, its limit is {self.limit} "
                               f"(tfcaption-serve --max-inflight-mb); retry later", "UNAVAILABLE")
        self.held += count
        holder.bytes += count
        self.peak = max(self.peak, self.held)


class _Holder:
    def __init__(self, budget):
        self.budget = budget
        self.bytes = 0

    def take(self, count):
        self.budget._take(self, count)


# A body announced as too large is still read (and dropped) up to this size, so that the client, which may
# still be sending it, reads the 413 instead of a reset connection; beyond it the connection is closed.
DRAIN_LIMIT = 64 * MiB


def _too_large(size, limit):
    return ServingError(f"Request body of {size} bytes exceeds this server's limit of {limit} bytes "
                        f"(tfcaption-serve --max-body-mb)", "INVALID_ARGUMENT", http_status=413)


async def _drain(request, already, limit):
    total = already
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            break


async def read_body(request, limits, holder):
    """The request body (Starlette `request`), within `limits.max_body_bytes` and the budget of `holder`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared = int(declared)
        except ValueError:
            raise ServingError("invalid Content-Length header")
        if declared > limits.max_body_bytes:
            if declared <= DRAIN_LIMIT:
                await _drain(request, 0, DRAIN_LIMIT)
            raise _too_large(declared, limits.max_body_bytes)
        holder.take(declared)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limits.max_body_bytes:
            await _drain(request, total, DRAIN_LIMIT)
            raise _too_large(f"more than {limits.max_body_bytes}", limits.max_body_bytes)
        if declared is None:
            holder.take(len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)
