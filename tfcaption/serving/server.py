"""Running the app on uvicorn, with TF Serving's gRPC API beside it: bind, say where, serve until SIGTERM /
Ctrl-C, finish what is in flight.

`serve` loads the models first (a path that holds no SavedModel is a one-line error before any socket is
opened), binds the REST socket itself (so `port=0` picks a free port and the line printed names it), then, on
one asyncio event loop, binds and starts the gRPC server (tfcaption.serving.grpc_api; `grpc_port=0` picks a
free port, printed too) and runs uvicorn. On SIGTERM or Ctrl-C both stop accepting calls at once, answer
those in flight (their batches keep running) for at most `Limits.shutdown_timeout_s`, then the app drains its
batchers.
"""

import asyncio
import signal
import socket

from tfcaption.serving.app import ServerOptions, ServingApp
from tfcaption.serving.models import ModelRepository


def bind(host, port):
    """A listening TCP socket on (host, port); port 0 takes a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets that say so,
    # and uvicorn writes a response's head and body separately, so with Nagle on, every response on a kept-alive
    # connection after the first waited ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_server(serving, access_log=False):
    """A `uvicorn.Server` for a ServingApp, with the shutdown timeout of its limits; its shutdown stops the
    gRPC API too, at the moment it stops accepting HTTP connections."""
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None):
            serving.stop_grpc()
            await super().shutdown(sockets)

    config = uvicorn.Config(serving.app, loop="asyncio", http="h11", lifespan="on", log_level="warning",
                            access_log=access_log,
                            timeout_graceful_shutdown=serving.options.limits.shutdown_timeout_s,
                            server_header=False)
    return Server(config)


async def run(server, serving, sock, grpc_address=None, started=None):
    """Serves REST (uvicorn `server` on `sock`) and, with `grpc_address` (host, port), TF Serving's gRPC API, on
    the running event loop, until the server is told to exit (SIGTERM, Ctrl-C, `should_exit`).

    `started(grpc_port)` is called once gRPC is bound (grpc_port None without it), before requests are served.
    """
    try:
        grpc_port = await serving.start_grpc(*grpc_address) if grpc_address is not None else None
        if started is not None:
            started(grpc_port)
        await server.serve(sockets=[sock])
    finally:
        stopping = serving.stop_grpc()  # already done when uvicorn shut down; here when it never started
        if stopping is not None:
            await stopping


def describe(repository, host, port):
    lines = []
    for name, versions in sorted(repository.models().items()):
        newest = max(versions)
        lines.append(f"  {name} version {newest} ({', '.join(sorted(versions[newest].signatures))}): "
                     f"POST http://{host}:{port}/v1/models/{name}:predict")
    return "\n".join(lines)


def serve(path, host="127.0.0.1", port=8501, options=None, num_versions=1, warmup=True, access_log=False,
          log=None, grpc_port=8500):
    """Serves the SavedModels under `path` until SIGTERM or Ctrl-C; returns the signal that stopped it.

    Args:
        path: an export root, a model directory or a version directory (see tfcaption.serving.models), or
            a ModelRepository already loaded.
        host, port: where to listen (port 0: a free port, printed).
        options: ServerOptions (batching, limits, polling).
        num_versions: newest versions served per model (0: all).
        warmup: call each signature once on load.
        access_log: uvicorn's line per request.
        log: `print`-like function for the server's lines (default: stdout, flushed).
        grpc_port: TF Serving's gRPC API on (host, grpc_port) beside REST (0: a free port, printed; None: no
            gRPC).

    Raises:
        FileNotFoundError, ValueError: the path holds no SavedModel, or an address cannot be bound.
    """
    log = log or (lambda message: print(message, flush=True))
    options = options or ServerOptions()
    if isinstance(path, ModelRepository):
        repository = path
    else:
        repository = ModelRepository(path, num_versions=num_versions, warmup=warmup, log=log)
    serving = ServingApp(repository, options, log=log)
    sock = bind(host, port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    batching = (f"dynamic batching up to {options.max_batch} examples / {options.batch_timeout_ms:g} ms"
                if options.batching else "no batching")

    def started(bound_grpc_port):
        grpc = (f"\ntfcaption-serve: gRPC (TF Serving's PredictionService and ModelService) on "
                f"{shown}:{bound_grpc_port}" if bound_grpc_port is not None else "")
        log(f"tfcaption-serve: listening on http://{shown}:{port}/ ({batching}, {options.worker_threads} model "
            f"thread(s)); web page at http://{shown}:{port}/{grpc}\n"
            f"{describe(repository, shown, port)}")

    stopped_by = []
    previous = signal.getsignal(signal.SIGTERM)
    # uvicorn handles SIGTERM while it runs and raises it again once shut down, with the handler that was
    # installed before it: this one, which records it, so that the caller can exit with 128 + SIGTERM.
    signal.signal(signal.SIGTERM, lambda signum, frame: stopped_by.append(signum))
    try:
        server = uvicorn_server(serving, access_log)
        asyncio.run(run(server, serving, sock, None if grpc_port is None else (host, grpc_port), started))
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
    if stopped_by:
        log("tfcaption-serve: stopped by SIGTERM after answering the requests in flight")
        return stopped_by[0]
    return None
