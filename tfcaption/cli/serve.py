"""tfcaption-serve: serve SavedModels over TF Serving's REST and gRPC APIs (no Docker), with dynamic batching
and a web page."""

import sys

from tfcaption.cli.common import ArgumentParser, captured_native_stderr, one_line_errors, quiet_tensorflow

PROGRAM = "tfcaption-serve"
MiB = 2 ** 20


def build_parser():
    parser = ArgumentParser(prog=PROGRAM, description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("path", metavar="SAVEDMODEL_ROOT_OR_DIR",
                        help="an export root (savedmodel/: every model under it), a model directory "
                             "(savedmodel/NAME: its newest version) or one SavedModel version directory")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; "
                                                             "0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=8501, help="TCP port (default 8501, TF Serving's REST port; "
                                                               "0: a free one, printed)")
    parser.add_argument("--grpc-port", type=int, default=8500,
                        help="TCP port of TF Serving's gRPC API (PredictionService, ModelService) on the same "
                             "host (default 8500, TF Serving's gRPC port; 0: a free one, printed)")
    parser.add_argument("--no-grpc", action="store_true", help="serve the REST API only")
    batching = parser.add_argument_group("dynamic batching")
    batching.add_argument("--max-batch", type=int, default=32, help="most images merged into one model call")
    batching.add_argument("--batch-timeout-ms", type=float, default=5.0,
                          help="longest wait for a batch to fill, from its oldest request (default 5)")
    batching.add_argument("--no-batching", action="store_true", help="one model call per request")
    batching.add_argument("--workers", type=int, default=0,
                          help="model calls running at once (default: 1 with batching, else the CPU count)")
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-body-mb", type=float, default=32.0,
                        help="largest request body (HTTP 413 above) and gRPC request message "
                             "(RESOURCE_EXHAUSTED above)")
    limits.add_argument("--max-images", type=int, default=64, help="most images in one request (HTTP 400 above)")
    limits.add_argument("--max-queue", type=int, default=512,
                        help="most images waiting per signature (HTTP 503 above)")
    limits.add_argument("--max-inflight-mb", type=float, default=512.0,
                        help="request bodies held at once, all requests together (HTTP 503 above)")
    limits.add_argument("--request-timeout-ms", type=float, default=30000.0,
                        help="a request not answered by then gets HTTP 504")
    limits.add_argument("--shutdown-timeout-s", type=float, default=30.0,
                        help="on SIGTERM, how long requests in flight may take to finish")
    models = parser.add_argument_group("models")
    models.add_argument("--num-versions", type=int, default=1,
                        help="newest versions served per model (default 1, as TF Serving; 0: every version)")
    models.add_argument("--poll-seconds", type=float, default=1.0,
                        help="how often to look for new versions (0: never)")
    models.add_argument("--no-warmup", action="store_true", help="skip the first call made on loading a version")
    parser.add_argument("--access-log", action="store_true", help="a line per request")
    return parser


@one_line_errors(PROGRAM)
def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
        if not args.no_grpc:
            import grpc  # noqa: F401
            import tensorflow_serving.apis  # noqa: F401
    except ImportError as error:
        raise ImportError(f"{PROGRAM} needs the serve extra ({error.name} is missing): "
                          f"pip install 'tfcaption[serve]'") from None
    from tfcaption.serving.app import ServerOptions
    from tfcaption.serving.limits import Limits
    from tfcaption.serving.models import discover

    for option, value in (("--port", args.port), ("--grpc-port", args.grpc_port)):
        if not 0 <= value <= 65535:
            raise ValueError(f"{option} must be a TCP port from 0 to 65535, got {value}")
    discover(args.path)  # a path without a SavedModel is a one-line error before TensorFlow starts
    limits = Limits(max_body_bytes=int(args.max_body_mb * MiB), max_images=args.max_images,
                    request_timeout_s=args.request_timeout_ms / 1000.0, max_queue=args.max_queue,
                    max_inflight_bytes=int(args.max_inflight_mb * MiB), shutdown_timeout_s=args.shutdown_timeout_s)
    options = ServerOptions(max_batch=args.max_batch, batch_timeout_ms=args.batch_timeout_ms,
                            batching=not args.no_batching, workers=args.workers, poll_seconds=args.poll_seconds,
                            limits=limits)
    quiet_tensorflow()
    from tfcaption.serving.models import ModelRepository
    from tfcaption.serving.server import serve

    log = lambda message: print(message, flush=True)  # noqa: E731
    with captured_native_stderr():  # TensorFlow's native lines about a SavedModel it cannot read
        repository = ModelRepository(args.path, num_versions=args.num_versions, warmup=not args.no_warmup, log=log)
    stopped_by = serve(repository, args.host, args.port, options, access_log=args.access_log, log=log,
                       grpc_port=None if args.no_grpc else args.grpc_port)
    return 0 if stopped_by is None else 128 + int(stopped_by)


if __name__ == "__main__":
    sys.exit(main())
