"""`tfcaption-serve`: TF Serving's REST and gRPC APIs for SavedModel exports, without Docker or TF Serving's binary.

- `rest`: TF Serving's JSON mapping (request bodies -> arrays -> response bodies) and its error bodies;
- `models`: model and version discovery, loading with `tf.saved_model.load` alone, new versions;
- `batching`: dynamic batching of concurrent requests into one model call;
- `limits`: body size, images per request, queue, timeouts, memory held by request bodies;
- `app`: the Starlette application (the REST endpoints, tfcaption's page and stats endpoints) and what REST and
  gRPC share (version resolution, signatures, the batchers, in-flight accounting);
- `grpc_api`: TF Serving's gRPC API (PredictionService, ModelService) on `grpc.aio`, over the same app;
- `server`: running both on one event loop (uvicorn for REST), graceful shutdown;
- `page`: the web page (caption, beams, attention per word, meshed gates).

`rest` needs only numpy and TensorFlow; the others need the `serve` extra (Starlette, uvicorn, grpcio,
tensorflow-serving-api).
"""


def serve(path, host="127.0.0.1", port=8501, options=None, **kwargs):
    """Serves the SavedModels under `path` over REST and gRPC (see `tfcaption.serving.server.serve`; `grpc_port`
    8500 by default, None for REST only)."""
    from tfcaption.serving.server import serve as _serve

    return _serve(path, host, port, options, **kwargs)
