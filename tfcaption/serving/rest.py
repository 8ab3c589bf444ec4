"""TF Serving's REST JSON mapping: predict request bodies -> named arrays, arrays -> response bodies, errors.

The rules are TF Serving's (its JSON API, as a client written for it expects them):

- A predict body is a JSON object with `instances` (row format: one element per example, stacked along the
  batch) or `inputs` (columnar format: one value per input, taken as is), never both, and optionally
  `signature_name` (default `serving_default`).
- In row format an instance is an object keyed by input name, or, for a signature with one input, the bare
  value. In columnar format `inputs` is an object keyed by input name, or, for one input, the bare value.
- A binary string travels as `{"b64": "..."}` (standard or URL-safe base64); a plain JSON string is taken
  as its UTF-8 bytes.
- The response is `{"predictions": [...]}` (row format: one entry per example, an object keyed by output
  name, or the bare value when the signature has one output) or `{"outputs": {...}}` (columnar; the bare
  value for one output). In row format every output must share the batch size. String outputs whose name
  ends in `_bytes` are written as `{"b64": ...}`, other strings as text.
- A failure is `{"error": "<message>"}` with the HTTP status of its canonical error code
  (`INVALID_ARGUMENT` 400, `NOT_FOUND` 404, `UNAVAILABLE` 503, `DEADLINE_EXCEEDED` 504, ...).

Only numpy and TensorFlow are needed here: the server (tfcaption.serving.app) and tests that call a loaded
SavedModel directly share this module.

Example:
>>> signature = SignatureInfo("serving_default", {"image_bytes": TensorInfo("string", (None,))}, ["caption"])
>>> request = parse_body(b'{"instances": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}]}')
>>> parsed = predict_inputs(request, signature)
>>> parsed.format, parsed.batch_size, parsed.inputs["image_bytes"].tolist()
('row', 2, [b'hello', b'world'])
>>> response_body(parsed, {"caption": np.array([b"a red circle", b"two stars"], dtype=object)})
'{"predictions": ["a red circle", "two stars"]}'
"""

import base64
import binascii
import dataclasses
import json

import numpy as np

DEFAULT_SIGNATURE = "serving_default"

# TF Serving's HTTP status for each canonical error code.
HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500,
    "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}


class ServingError(Exception):
    """A request that fails with a canonical error `code` and a client-facing `message`.

    `status` is the HTTP status TF Serving gives that code (`http_status` overrides it, e.g. 413 for an
    oversized body, which TF Serving's own HTTP layer answers before any code exists).
    """

    def __init__(self, message, code="INVALID_ARGUMENT", http_status=None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = http_status or HTTP_STATUS.get(code, 500)

    def body(self):
        return error_body(self.message)


def error_body(message):
    """TF Serving's error body: `{"error": message}`."""
    return json.dumps({"error": message})


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """An input's dtype name (numpy's: "string", "float32", "int32", ...) and shape (None for unknown)."""

    dtype: str
    shape: tuple


@dataclasses.dataclass(frozen=True)
class SignatureInfo:
    """What the mapping needs of a signature: its name, its inputs (name -> TensorInfo) and output names."""

    name: str
    inputs: dict
    outputs: list

    @classmethod
    def from_concrete_function(cls, name, function):
        """From a loaded SavedModel's `signatures[name]`."""
        specs = function.structured_input_signature[1]
        inputs = {key: TensorInfo("string" if spec.dtype.name == "string" else spec.dtype.name,
                                  tuple(spec.shape.as_list()) if spec.shape.rank is not None else None)
                  for key, spec in specs.items()}
        return cls(name, inputs, sorted(function.structured_outputs))


@dataclasses.dataclass
class PredictInputs:
    """A parsed predict request: `format` ("row" or "columnar"), `signature_name`, `inputs` (name ->
    numpy array, strings as object arrays of bytes) and `batch_size` (the leading dimension, shared)."""

    format: str
    signature_name: str
    inputs: dict
    batch_size: int


def parse_body(body):
    """The JSON object of a request body (bytes or str), or ServingError INVALID_ARGUMENT."""
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ServingError(f"JSON Parse error: Invalid encoding in string. at offset: {error.start}")
    if not body.strip():
        raise ServingError("JSON Parse error: The document is empty. at offset: 0")
    try:
        request = json.loads(body)
    except json.JSONDecodeError as error:
        raise ServingError(f"JSON Parse error: {error.msg}. at offset: {error.pos}")
    if not isinstance(request, dict):
        raise ServingError("JSON Parse error: the request body must be a JSON object "
                           "with an 'instances' or 'inputs' key")
    return request


def signature_name(request):
    """`signature_name` of a parsed request (default serving_default)."""
    name = request.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(name, str):
        raise ServingError("'signature_name' must be a string")
    return name or DEFAULT_SIGNATURE


_URLSAFE_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")


def _b64decode(text):
    """Standard or URL-safe base64 (padding optional), strictly: any other character is an error."""
    if not isinstance(text, str):
        raise ServingError(f"JSON Value: {json.dumps(text)[:80]} not formatted correctly for base64 data")
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        pass
    if set(padded) <= _URLSAFE_ALPHABET:
        try:
            return base64.urlsafe_b64decode(padded)
        except (binascii.Error, ValueError):
            pass
    raise ServingError(f"Unable to base64 decode: {text[:40]!r}{'...' if len(text) > 40 else ''} is not base64")


def _is_b64(value):
    return isinstance(value, dict) and set(value) == {"b64"}


def _leaves_to_bytes(value, where):
    """Nested lists of JSON strings / {"b64": ...} -> the same nesting of bytes."""
    if isinstance(value, list):
        return [_leaves_to_bytes(v, where) for v in value]
    if _is_b64(value):
        return _b64decode(value["b64"])
    if isinstance(value, str):
        return value.encode("utf-8")
    raise ServingError(f"{where}: expected a string or {{\"b64\": ...}} for a DT_STRING input, "
                       f"got {json.dumps(value)[:80]}")


def _shape_of(value, where):
    """The rectangular shape of nested lists, or ServingError for ragged nesting."""
    if not isinstance(value, list):
        return ()
    if not value:
        return (0,)
    shapes = {_shape_of(v, where) for v in value}
    if len(shapes) != 1:
        raise ServingError(f"{where}: all elements must have the same shape (ragged lists are not a tensor)")
    return (len(value), *shapes.pop())


_INTEGER_DTYPES = frozenset(("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"))


def to_array(value, info, where):
    """A JSON value -> numpy array of the input's dtype (strings: an object array of bytes)."""
    shape = _shape_of(value, where)
    if info.dtype == "string":
        array = np.empty(shape, dtype=object)
        leaves = _leaves_to_bytes(value, where)
        if shape:
            array[...] = _nested_to_object(leaves, shape)
        else:
            array[()] = leaves
        return array
    if info.dtype == "bool":
        check = lambda v: isinstance(v, bool)  # noqa: E731
    elif info.dtype in _INTEGER_DTYPES:
        # TF Serving takes only JSON integers for integer inputs: 1.5 (or 2.0) for a seed is an error, not 1.
        check = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    else:
        check = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    for leaf in _flatten(value):
        if not check(leaf):
            raise ServingError(f"{where}: expected {info.dtype} values, got {json.dumps(leaf)[:80]}")
    try:
        return np.asarray(value, dtype=info.dtype).reshape(shape)
    except (OverflowError, ValueError) as error:
        raise ServingError(f"{where}: {error}")


def _nested_to_object(leaves, shape):
    out = np.empty(shape, dtype=object)
    for index in np.ndindex(*shape):
        item = leaves
        for i in index:
            item = item[i]
        out[index] = item
    return out


def _flatten(value):
    if isinstance(value, list):
        for v in value:
            yield from _flatten(v)
    else:
        yield value


def check_shape(array, info, name):
    """ServingError unless `array` has the rank and the known dimensions of the signature's input `info`."""
    if info.shape is None:
        return
    if array.ndim != len(info.shape) or any(d is not None and d != a for d, a in zip(info.shape, array.shape)):
        expected = "[" + ", ".join("-1" if d is None else str(d) for d in info.shape) + "]"
        raise ServingError(f"Input tensor '{name}' has shape {list(array.shape)}, which does not match the "
                           f"signature's {expected}")


def predict_inputs(request, signature, max_batch_size=None):
    """Maps a parsed predict request onto `signature`'s inputs: a PredictInputs, or ServingError.

    `max_batch_size` caps the examples one request may carry (ServingError INVALID_ARGUMENT above it).
    """
    has_instances, has_inputs = "instances" in request, "inputs" in request
    if has_instances and has_inputs:
        raise ServingError("Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist")
    if not (has_instances or has_inputs):
        raise ServingError("Missing 'inputs' or 'instances' key")
    names = list(signature.inputs)
    if has_instances:
        rows = request["instances"]
        if not isinstance(rows, list):
            raise ServingError("Expecting 'instances' to be an list/array")
        if not rows:
            raise ServingError("'instances' is an empty list: send at least one instance")
        _check_count(len(rows), max_batch_size)
        named = [isinstance(row, dict) and not _is_b64(row) for row in rows]
        if any(named) and not all(named):
            raise ServingError("Failed to process 'instances': all instances must be objects keyed by input name, "
                               "or all bare values")
        if not named[0]:
            if len(names) != 1:
                raise ServingError(f"The signature has {len(names)} inputs ({', '.join(names)}): each instance "
                                   f"must be an object keyed by input name")
            rows = [{names[0]: row} for row in rows]
        columns = {}
        for name in names:
            values = []
            for index, row in enumerate(rows):
                if name not in row:
                    raise ServingError(f"Failed to process element: {index} of 'instances' list. "
                                       f"Missing input tensor alias: {name}")
                values.append(row[name])
            info = signature.inputs[name]
            array = to_array(values, info, f"instances[...].{name}")
            check_shape(array, info, name)
            columns[name] = array
        for index, row in enumerate(rows):
            unknown = sorted(set(row) - set(names))
            if unknown:
                raise ServingError(f"Failed to process element: {index} of 'instances' list. Unknown input "
                                   f"tensor alias: {unknown[0]}; the signature's inputs are {{{', '.join(names)}}}")
        batch = len(rows)
    else:
        given = request["inputs"]
        if not (isinstance(given, dict) and not _is_b64(given)):
            if len(names) != 1:
                raise ServingError(f"The signature has {len(names)} inputs ({', '.join(names)}): 'inputs' must be "
                                   f"an object keyed by input name")
            given = {names[0]: given}
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ServingError(f"Unknown input tensor alias: {unknown[0]}; the signature's inputs are "
                               f"{{{', '.join(names)}}}")
        columns = {}
        for name in names:
            if name not in given:
                raise ServingError(f"Missing input tensor alias: {name}")
            info = signature.inputs[name]
            array = to_array(given[name], info, f"inputs.{name}")
            check_shape(array, info, name)
            columns[name] = array
        batch = batch_size(columns, max_batch_size)
    return PredictInputs("row" if has_instances else "columnar", signature.name, columns, int(batch))


def batch_size(columns, max_batch_size=None):
    """The leading dimension that every array of `columns` (name -> array, columnar) shares, or ServingError:
    none, a different one per input, zero examples, or more than `max_batch_size`."""
    sizes = {a.shape[0] if a.ndim else None for a in columns.values()}
    if None in sizes or len(sizes) != 1:
        raise ServingError("Every input must have the same leading (batch) dimension")
    batch = sizes.pop()
    if batch == 0:
        raise ServingError("'inputs' holds an empty batch: send at least one example")
    _check_count(batch, max_batch_size)
    return int(batch)


def _check_count(count, limit):
    if limit is not None and count > limit:
        raise ServingError(f"{count} examples in one request exceed this server's limit of {limit} "
                           f"(tfcaption-serve --max-images)")


def _json_value(array, name):
    """An output array as JSON-ready nested lists: strings as text, or {"b64"} for names ending in _bytes."""
    if array.dtype == object or array.dtype.kind in "SU":
        if name.endswith("_bytes"):
            convert = lambda b: {"b64": base64.b64encode(b).decode("ascii")}  # noqa: E731
        else:
            convert = lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)  # noqa: E731
        if array.ndim == 0:
            return convert(array[()])
        return np.vectorize(convert, otypes=[object])(array).tolist()
    return array.tolist()


def response_body(parsed, outputs):
    """The response JSON text for `outputs` (name -> numpy array, batch-major) of a PredictInputs."""
    names = sorted(outputs)
    if parsed.format == "columnar":
        values = {name: _json_value(np.asarray(outputs[name]), name) for name in names}
        return json.dumps({"outputs": values[names[0]] if len(names) == 1 else values})
    batch = parsed.batch_size
    for name in names:
        array = np.asarray(outputs[name])
        if array.ndim == 0 or array.shape[0] != batch:
            raise ServingError(f"Tensor name: {name} has inconsistent batch size: "
                               f"{array.shape[0] if array.ndim else 0} expecting: {batch}")
    columns = {name: _json_value(np.asarray(outputs[name]), name) for name in names}
    if len(names) == 1:
        rows = columns[names[0]]
    else:
        rows = [{name: columns[name][i] for name in names} for i in range(batch)]
    return json.dumps({"predictions": rows})


def error_from_tensorflow(error):
    """A ServingError for an exception raised by a signature call (tf.errors.OpError keeps its code)."""
    import tensorflow as tf

    if isinstance(error, tf.errors.OpError):
        name = _CODE_NAMES.get(error.error_code, "UNKNOWN")
        return ServingError(clean_message(error.message), name)
    if isinstance(error, (TypeError, ValueError)):
        return ServingError(str(error), "INVALID_ARGUMENT")
    return ServingError(f"{type(error).__name__}: {error}", "INTERNAL")


# tf.errors' integer codes (absl's canonical codes) -> names.
_CODE_NAMES = {
    1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
    6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION",
    10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE", 15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}


def clean_message(message):
    """A TensorFlow error message without the Python traceback of the graph's construction.

    Eager calls of a traced function prefix the op's message with "Graph execution error:", "Detected at
    node ..." and the stack where the failing node was defined (indented frames with paths on the machine
    that exported the model, or "<stack traces unavailable>"); TF Serving reports the op's message itself.
    What is left is that message and its node, on one line.

    Example:
    >>> clean_message("Graph execution error:\\n\\nDetected at node A defined at (most recent call last):\\n"
    ...               "  File \\"/x.py\\", line 1, in f\\n    g()\\nassertion failed: [image_bytes[0]: empty string]\\n"
    ...               "\\t [[{{node A}}]] [Op:__inference_f_1]")
    'assertion failed: [image_bytes[0]: empty string] [[{{node A}}]] [Op:__inference_f_1]'
    """
    lines = message.splitlines()
    if lines and lines[0].startswith("Graph execution error:"):
        detected = [i for i, line in enumerate(lines) if line.startswith("Detected at node")]
        start = detected[-1] + 1 if detected else 1
        kept = [line for line in lines[start:]
                if not line.startswith("  ") and line.strip() not in ("", "<stack traces unavailable>")]
        if kept:
            lines = kept
    return " ".join(line.strip() for line in lines if line.strip())


def predict(signatures, body, max_batch_size=None):
    """One predict request against loaded signatures, synchronously: `(http status, response JSON text)`.

    `signatures` is a loaded SavedModel's `.signatures` (name -> concrete function). What the server does
    without dynamic batching; the export tests use it to check exports against the mapping directly.
    """
    import tensorflow as tf

    try:
        request = parse_body(body)
        name = signature_name(request)
        if name not in signatures:
            raise ServingError(f"Serving signature name: \"{name}\" not found in signature def")
        parsed = predict_inputs(request, SignatureInfo.from_concrete_function(name, signatures[name]), max_batch_size)
        try:
            outputs = signatures[name](**{k: tf.constant(v) for k, v in parsed.inputs.items()})
        except Exception as error:  # noqa: BLE001 - every failure of the call becomes an error body
            raise error_from_tensorflow(error) from error
        return 200, response_body(parsed, {k: v.numpy() for k, v in outputs.items()})
    except ServingError as error:
        return error.status, error.body()
