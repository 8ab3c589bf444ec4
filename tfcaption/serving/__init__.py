"""`tfcaption-serve`: TF Serving's REST API for SavedModel exports, without Docker or TF Serving's binary.

- `rest`: TF Serving's JSON mapping (request bodies -> arrays -> response bodies) and its error bodies;
- `models`: model and version discovery, loading with `tf.saved_model.load` alone, new versions;
- `batching`: dynamic batching of concurrent requests into one model call;
- `limits`: body size, images per request, queue, timeouts, memory held by request bodies;
- `app`: the Starlette application (the REST endpoints, tfcaption's page and stats endpoints);
- `server`: running it on uvicorn, graceful shutdown;
- `page`: the web page (caption, beams, attention per word, meshed gates).

`rest` needs only numpy and TensorFlow; the others need the `serve` extra (Starlette, uvicorn).
"""


def serve(path, host="127.0.0.1", port=8501, options=None, **kwargs):
    """Serves the SavedModels under `path` (see `tfcaption.serving.server.serve`)."""
    from tfcaption.serving.server import serve as _serve

    return _serve(path, host, port, options, **kwargs)
