"""The ASGI application: TF Serving's REST API over a ModelRepository, dynamic batching, the web page.

Endpoints (TF Serving's, with its request, response and error bodies):

- `POST /v1/models/NAME[/versions/N]:predict`: `instances` or `inputs`, `signature_name`;
- `GET /v1/models/NAME[/versions/N]`: version status (`model_version_status`);
- `GET /v1/models/NAME[/versions/N]/metadata`: the model spec and its `signature_def` map.

tfcaption's own, for the web page and for watching the server:

- `GET /`: the web page (tfcaption.serving.page);
- `GET /tfcaption/models`: every served model's newest version with its signatures, serving settings
  (`assets/config.json`) and vocabulary (`assets/vocab.txt`);
- `GET /tfcaption/stats`: per signature, requests, model calls, examples per call, fallbacks, rejections.

TF Serving's gRPC API (tfcaption.serving.grpc_api) runs on the same event loop over the same `ServingApp`:
`resolve`, `signature`, `request` and `infer` are what both APIs call, so a gRPC call and a REST request
share versions, limits and batches.

Version labels (`/labels/NAME`) and the classify / regress methods are TF Serving features of models that
have them; tfcaption exports have neither, so those requests get TF Serving's NOT_FOUND / INVALID_ARGUMENT.
"""

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import re

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from tfcaption.serving import rest
from tfcaption.serving.batching import Batcher
from tfcaption.serving.limits import BodyBudget, Limits, read_body
from tfcaption.serving.models import SAMPLE_SIGNATURE
from tfcaption.serving.rest import ServingError


@dataclasses.dataclass
class ServerOptions:
    """How the server batches and what it allows (see tfcaption-serve --help).

    Attributes:
        max_batch: most examples merged into one model call.
        batch_timeout_ms: longest wait for a batch to fill, from its oldest request's arrival.
        batching: False: one model call per request (no merging, no waiting).
        workers: model calls running at once (threads); 0: 1 with batching, else the number of CPUs.
        poll_seconds: how often the model directory is checked for new versions (0: never).
        limits: a `Limits`.
    """

    max_batch: int = 32
    batch_timeout_ms: float = 5.0
    batching: bool = True
    workers: int = 0
    poll_seconds: float = 1.0
    limits: Limits = dataclasses.field(default_factory=Limits)

    def __post_init__(self):
        if self.max_batch < 1:
            raise ValueError(f"--max-batch must be >= 1, got {self.max_batch}")
        if self.batch_timeout_ms < 0:
            raise ValueError(f"--batch-timeout-ms must be >= 0, got {self.batch_timeout_ms}")
        if self.workers < 0 or self.poll_seconds < 0:
            raise ValueError("workers and poll_seconds must be >= 0")

    @property
    def worker_threads(self):
        return self.workers or (1 if self.batching else (os.cpu_count() or 1))


_MODEL_PATH = re.compile(
    r"^(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<method>predict|classify|regress))?$")


def _json(payload, status=200):
    return Response(json.dumps(payload), status_code=status, media_type="application/json")


def _error(error):
    return Response(error.body(), status_code=error.status, media_type="application/json")


class ServingApp:
    """The state behind the routes: repository, batchers, executors, body budget, directory watcher."""

    def __init__(self, repository, options=None, log=None):
        self.repository = repository
        self.options = options or ServerOptions()
        self.log = log or (lambda message: None)
        self.budget = BodyBudget(self.options.limits.max_inflight_bytes)
        self.executor = concurrent.futures.ThreadPoolExecutor(self.options.worker_threads,
                                                              thread_name_prefix="tfcaption-model")
        self.loader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tfcaption-loader")
        self.batchers = {}
        self.in_flight = 0
        self.grpc = None  # the grpc.aio server of TF Serving's gRPC API, once started (start_grpc)
        self.grpc_port = None
        self._grpc_stopping = None
        self._watcher = None
        self.app = Starlette(routes=[
            Route("/", self.page, methods=["GET"]),
            Route("/tfcaption/models", self.models, methods=["GET"]),
            Route("/tfcaption/stats", self.stats, methods=["GET"]),
            Route("/v1/models/{path:path}", self.models_api, methods=["GET", "POST"]),
            Route("/v1/{path:path}", self.malformed, methods=["GET", "POST", "PUT", "DELETE"]),
        ], lifespan=self.lifespan)
        self.app.state.serving = self

    # ------------------------------------------------------------------ lifecycle
    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        if self.options.poll_seconds > 0 and self.repository.layout != "version":
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        try:
            yield
        finally:
            if self.grpc is not None:  # its calls in flight still need the batchers
                await self.stop_grpc()
            if self._watcher is not None:
                self._watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._watcher
            for batcher in list(self.batchers.values()):
                await batcher.close()
            self.executor.shutdown(wait=True)
            self.loader.shutdown(wait=False, cancel_futures=True)

    async def start_grpc(self, host, port):
        """Binds TF Serving's gRPC API (tfcaption.serving.grpc_api) to (host, port) and starts it on the running
        event loop, the one the REST app runs on; returns the bound port (port 0: a free one)."""
        from tfcaption.serving.grpc_api import start_server

        self.grpc, self.grpc_port = await start_server(self, host, port)
        return self.grpc_port

    def stop_grpc(self):
        """Stops taking gRPC calls and gives those in flight the shutdown timeout to finish: a future (the same
        one on every call), or None without a gRPC server."""
        if self.grpc is None:
            return None
        if self._grpc_stopping is None:
            self._grpc_stopping = asyncio.ensure_future(self.grpc.stop(self.options.limits.shutdown_timeout_s))
        return self._grpc_stopping

    async def _watch(self):
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.options.poll_seconds)
            try:
                await loop.run_in_executor(self.loader, self.repository.refresh)
            except Exception as error:  # noqa: BLE001 - keep watching
                self.log(f"checking {self.repository.path} failed: {error}")
            await self._close_stale_batchers()

    async def _close_stale_batchers(self):
        served = self.repository.models()
        for key in list(self.batchers):
            name, version, _, served_id = key
            current = served.get(name, {}).get(version)
            if current is None or id(current) != served_id:
                batcher = self.batchers.pop(key)
                await batcher.close()

    def _batcher(self, served, signature_name):
        key = (served.name, served.version, signature_name, id(served))
        batcher = self.batchers.get(key)
        if batcher is None:
            function = served.function(signature_name)

            def call(inputs):
                import tensorflow as tf

                outputs = function(**{name: tf.constant(value) for name, value in inputs.items()})
                return {name: value.numpy() for name, value in outputs.items()}

            options = self.options
            batcher = Batcher(call, self.executor, max_batch=options.max_batch if options.batching else 1,
                              timeout_s=options.batch_timeout_ms / 1000.0, max_queue=options.limits.max_queue,
                              workers=options.worker_threads, merge=options.batching).start()
            self.batchers[key] = batcher
        return batcher

    # ------------------------------------------------------------------ routes
    async def page(self, request):
        from tfcaption.serving.page import PAGE

        return HTMLResponse(PAGE)

    async def models(self, request):
        out = []
        for name, versions in sorted(self.repository.models().items()):
            if versions:
                newest = versions[max(versions)]
                out.append({**newest.info(), "versions": sorted(versions)})
        return _json({"models": out})

    async def stats(self, request):
        signatures = [{"model": name, "version": version, "signature": signature, "queued": batcher.queued,
                       **batcher.stats.json()}
                      for (name, version, signature, _), batcher in sorted(self.batchers.items(),
                                                                            key=lambda kv: kv[0][:3])]
        options = self.options
        return _json({"batching": {"enabled": options.batching, "max_batch": options.max_batch,
                                   "batch_timeout_ms": options.batch_timeout_ms, "workers": options.worker_threads},
                      "in_flight": self.in_flight, "body_bytes_held": self.budget.held,
                      "body_bytes_peak": self.budget.peak, "signatures": signatures})

    async def malformed(self, request):
        return _error(ServingError(f"Malformed request: {request.method} {request.url.path}", "INVALID_ARGUMENT",
                                   http_status=404))

    async def models_api(self, request):
        match = _MODEL_PATH.match(request.path_params["path"])
        if match is None:
            return await self.malformed(request)
        name, version, label = match["name"], match["version"], match["label"]
        try:
            if label is not None:
                self.resolve(name, version, label)
            if match["method"]:
                if request.method != "POST":
                    return await self.malformed(request)
                if match["method"] != "predict":
                    raise ServingError(f"Expected prediction signature method tensorflow/serving/predict; "
                                       f"{match['method']} is not supported by this model", "INVALID_ARGUMENT")
                return await self.predict(request, name, version)
            if request.method != "GET":
                return await self.malformed(request)
            if match["metadata"]:
                return _json(self.repository.metadata(name, version))
            return _json(self.repository.status(name, version))
        except ServingError as error:
            return _error(error)

    async def predict(self, request, name, version):
        limits = self.options.limits
        try:
            with self.request() as holder:
                served = self.resolve(name, version)
                body = await read_body(request, limits, holder)
                parsed_request = rest.parse_body(body)
                signature = self.signature(served, rest.signature_name(parsed_request))
                parsed = rest.predict_inputs(parsed_request, signature, limits.max_images)
                del parsed_request, body
                outputs = await self.infer(served, signature.name, parsed.inputs, parsed.batch_size)
                text = rest.response_body(parsed, outputs)
            return Response(text, status_code=200, media_type="application/json")
        except ServingError as error:
            return _error(error)
        except ClientDisconnect:
            return Response(status_code=499)  # nobody is left to read it
        except Exception as error:  # noqa: BLE001 - a bug here must still answer in TF Serving's format
            return _error(self.internal_error("predict", name, error))

    # ------------------------------------------------------------------ what REST and gRPC share
    @contextlib.contextmanager
    def request(self):
        """One predict request in flight: counted, with its share of the body budget (`holder.take(bytes)`)."""
        self.in_flight += 1
        try:
            with self.budget.hold() as holder:
                yield holder
        finally:
            self.in_flight -= 1

    def resolve(self, name, version=None, label=None):
        """The ServedVersion a request names by version number, label or neither (the newest), or ServingError.

        tfcaption serves no version labels (TF Serving's are set in its model config), so every label is
        TF Serving's answer to an unknown one.
        """
        if label:
            raise ServingError(f"Unrecognized servable version label: {label}", "INVALID_ARGUMENT")
        return self.repository.get(name, version)

    @staticmethod
    def signature(served, name, grpc=False):
        """The SignatureInfo of `served`'s signature `name`, or TF Serving's error for an unknown one (its
        REST and gRPC APIs word it differently, and gRPC's is FAILED_PRECONDITION)."""
        if name in served.signatures:
            return served.signatures[name]
        hint = ("; this export predates the sampling signature: re-export it with tfcaption-export"
                if name == SAMPLE_SIGNATURE else "")
        if grpc:
            raise ServingError(f"Serving signature key \"{name}\" not found{hint}.", "FAILED_PRECONDITION")
        raise ServingError(f"Serving signature name: \"{name}\" not found in signature def{hint}")

    async def infer(self, served, signature_name, inputs, batch_size):
        """Outputs (name -> numpy array) of one request's `inputs` through the signature's batcher, within the
        request timeout (ServingError DEADLINE_EXCEEDED after it)."""
        timeout = self.options.limits.request_timeout_s
        try:
            return await asyncio.wait_for(self._batcher(served, signature_name).submit(inputs, batch_size), timeout)
        except asyncio.TimeoutError:
            raise ServingError(f"Request timed out after {timeout:g} s (tfcaption-serve --request-timeout-ms)",
                               "DEADLINE_EXCEEDED") from None

    def internal_error(self, method, name, error):
        """A bug's ServingError INTERNAL (logged), so that the client still gets an answer in TF Serving's form."""
        self.log(f"{method} {name} failed: {type(error).__name__}: {error}")
        return ServingError(f"{type(error).__name__}: {error}", "INTERNAL")


def create_app(repository, options=None, log=None):
    """The Starlette application serving `repository` (a ModelRepository) with `options` (ServerOptions)."""
    return ServingApp(repository, options, log).app
