"""TF Serving's gRPC API (`tensorflow.serving.PredictionService` and `ModelService`) over a ServingApp.

The services and messages are tensorflow-serving-api's, so its own `PredictionServiceStub` and
`ModelServiceStub` (or any client generated from TF Serving's protos) call this server as they call TF
Serving on its port 8500:

- `Predict`: `model_spec` (`name`, `version` or `version_label`, `signature_name`, default
  `serving_default`), `inputs` as TensorProtos (every input of the signature, of its dtype and shape, one
  leading batch dimension), `output_filter` (default every output); the outputs come back as TensorProtos
  with the model spec that answered. The request goes through the REST API's batching queue, model
  versions and limits (tfcaption.serving.app): REST and gRPC requests are merged into the same model calls.
- `GetModelMetadata`: `metadata_field` `signature_def`, answered with a SignatureDefMap packed in an Any.
- `ModelService.GetModelStatus`: the state of every version (or of `model_spec.version`) as TF Serving
  reports it (START, LOADING, AVAILABLE, END).
- `Classify`, `Regress`, `MultiInference` and `HandleReloadConfigRequest`: UNIMPLEMENTED (tfcaption exports
  have predict signatures only, and new versions are found by polling the model directory).

A failure is the call's gRPC status, with TF Serving's code and message: NOT_FOUND for an unknown model or
version, FAILED_PRECONDITION for an unknown signature, INVALID_ARGUMENT for bad inputs (a bad image fails
only its own request, as over REST), UNAVAILABLE for a full queue or body budget, DEADLINE_EXCEEDED past the
request timeout, and RESOURCE_EXHAUSTED, from gRPC itself, for a request message larger than
`Limits.max_body_bytes` (tfcaption-serve --max-body-mb).
"""

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from tfcaption.cli.common import captured_native_stderr
from tfcaption.serving.rest import DEFAULT_SIGNATURE, ServingError, batch_size, check_shape

METADATA_FIELD = "signature_def"


def _version(model_spec):
    """(version, label) that a ModelSpec names: either one or neither."""
    choice = model_spec.WhichOneof("version_choice")
    return (model_spec.version.value if choice == "version" else None,
            model_spec.version_label if choice == "version_label" else None)


def _require_model_spec(request):
    if not request.HasField("model_spec"):
        raise ServingError("Missing ModelSpec")


def input_arrays(tensors, signature):
    """A Predict request's `inputs` (name -> TensorProto) as numpy arrays checked against `signature` (a
    SignatureInfo): every input and no other, each of the signature's dtype and shape. ServingError
    INVALID_ARGUMENT otherwise, with TF Serving's message for the wrong set of inputs."""
    import tensorflow as tf

    given, expected = sorted(tensors), sorted(signature.inputs)
    if given != expected:
        extra = sorted(set(given) - set(expected))
        missing = sorted(set(expected) - set(given))
        raise ServingError(f"input size does not match signature: {len(given)}!={len(expected)} "
                           f"len({{{','.join(given)}}}) != len({{{','.join(expected)}}}). Sent extra: "
                           f"{{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}.")
    arrays = {}
    for name in expected:
        info, proto = signature.inputs[name], tensors[name]
        try:
            dtype = tf.dtypes.as_dtype(proto.dtype).name
            array = tf.make_ndarray(proto)
        except (TypeError, ValueError) as error:
            raise ServingError(f"tensor parsing error: {name}: {error}") from None
        if dtype != info.dtype:
            raise ServingError(f"Input tensor '{name}' has dtype {dtype}, the signature's is {info.dtype}")
        check_shape(array, info, name)
        arrays[name] = array
    return arrays


def output_names(output_filter, signature):
    """The outputs a Predict request asks for (`output_filter`, default all), or TF Serving's ServingError."""
    seen = []
    for alias in output_filter:
        if alias not in signature.outputs:
            raise ServingError(f"output tensor alias not found in signature: {alias} Outputs expected to be in "
                               f"the set {{{','.join(sorted(signature.outputs))}}}.")
        if alias in seen:
            raise ServingError(f"duplicate output tensor alias: {alias}")
        seen.append(alias)
    return seen or list(signature.outputs)


async def _answer(context, serving, method, name, coroutine):
    """The response of `coroutine`, or the call aborted with its ServingError's code (a bug: INTERNAL)."""
    try:
        return await coroutine
    except ServingError as serving_error:
        error = serving_error
    except Exception as unexpected:  # noqa: BLE001 - a bug here must still answer with a status
        error = serving.internal_error(method, name, unexpected)
    await context.abort(grpc.StatusCode[error.code], error.message)


async def _unimplemented(context, method, why):
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented by tfcaption-serve: {why}")


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """`tensorflow.serving.PredictionService` over a ServingApp (`serving`)."""

    def __init__(self, serving):
        self.serving = serving

    async def Predict(self, request, context):  # noqa: N802 - the gRPC method's name
        return await _answer(context, self.serving, "predict", request.model_spec.name, self._predict(request))

    async def _predict(self, request):
        import tensorflow as tf

        serving = self.serving
        with serving.request() as holder:
            holder.take(request.ByteSize())
            _require_model_spec(request)
            spec = request.model_spec
            served = serving.resolve(spec.name, *_version(spec))
            signature = serving.signature(served, spec.signature_name or DEFAULT_SIGNATURE, grpc=True)
            inputs = input_arrays(request.inputs, signature)
            size = batch_size(inputs, serving.options.limits.max_images)
            names = output_names(request.output_filter, signature)
            outputs = await serving.infer(served, signature.name, inputs, size)
            response = predict_pb2.PredictResponse()
            response.model_spec.name = served.name
            response.model_spec.version.value = served.version
            response.model_spec.signature_name = signature.name
            for name in names:
                response.outputs[name].CopyFrom(tf.make_tensor_proto(outputs[name]))
        return response

    async def GetModelMetadata(self, request, context):  # noqa: N802
        return await _answer(context, self.serving, "metadata", request.model_spec.name, self._metadata(request))

    async def _metadata(self, request):
        _require_model_spec(request)
        if not request.metadata_field:
            raise ServingError("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != METADATA_FIELD:
                raise ServingError(f"Metadata field {field} is not supported")
        spec = request.model_spec
        served = self.serving.resolve(spec.name, *_version(spec))
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = served.name
        response.model_spec.version.value = served.version
        signatures = json_format.ParseDict({"signature_def": served.signature_def},
                                           get_model_metadata_pb2.SignatureDefMap())
        response.metadata[METADATA_FIELD].Pack(signatures)
        return response

    async def Classify(self, request, context):  # noqa: N802
        await _unimplemented(context, "Classify", "tfcaption exports have predict signatures only; use Predict")

    async def Regress(self, request, context):  # noqa: N802
        await _unimplemented(context, "Regress", "tfcaption exports have predict signatures only; use Predict")

    async def MultiInference(self, request, context):  # noqa: N802
        await _unimplemented(context, "MultiInference",
                             "tfcaption exports have predict signatures only; use Predict")


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """`tensorflow.serving.ModelService` over a ServingApp: version states (the REST API's model status)."""

    def __init__(self, serving):
        self.serving = serving

    async def GetModelStatus(self, request, context):  # noqa: N802
        return await _answer(context, self.serving, "status", request.model_spec.name, self._status(request))

    async def _status(self, request):
        _require_model_spec(request)
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        return json_format.ParseDict(self.serving.repository.status(spec.name, version),
                                     get_model_status_pb2.GetModelStatusResponse())

    async def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        await _unimplemented(context, "HandleReloadConfigRequest",
                             "it serves the model directory it was started on, and polls it for new versions")


def address(host, port):
    """gRPC's form of a listening address (IPv6 hosts in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start_server(serving, host, port):
    """A started `grpc.aio` server with both services on (host, port), on the running event loop, and the port
    it bound (port 0: a free one). ValueError (one line) when the address cannot be bound."""
    limits = serving.options.limits
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", limits.max_body_bytes),
        # gRPC's default lets a second server bind a port already in use, and then neither gets every call.
        ("grpc.so_reuseport", 0),
    ])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(serving), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(serving), server)
    try:
        with captured_native_stderr(keep_on=(RuntimeError,)):  # gRPC's own log line would make the error two
            bound = server.add_insecure_port(address(host, port))
    except RuntimeError:
        bound = 0
    if not bound:
        raise ValueError(f"cannot listen for gRPC on {address(host, port)}: the port is in use or the address "
                         f"is not this machine's (tfcaption-serve --grpc-port)")
    await server.start()
    return server, bound
