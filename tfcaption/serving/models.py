"""Which SavedModels a server serves: model and version discovery, loading with TensorFlow alone, new versions.

A server is pointed at one path, in TF Serving's layout `ROOT/<model>/<version>/saved_model.pb`:

- an export root (`savedmodel/`): every model under it, and models that appear later;
- a model directory (`savedmodel/shapes_m2_small/`): that model, its integer versions;
- a version directory (`savedmodel/shapes_m2_small/3/`, or any SavedModel directory): that one version,
  named after its parent (a non-numeric directory is the model itself, as version 1), never reloaded.

As TF Serving's default version policy does, the newest `num_versions` (1) versions of each model are
served; a request without a version goes to the newest available one. The directory is polled
(`poll_seconds`): a new version is loaded in the background and served once loaded (the version it
replaces keeps answering until then and is then unloaded); a version whose directory disappears is
unloaded. An export being written is invisible (tfcaption-export renames a finished SavedModel into
place), and a load that fails is retried on later polls, up to three times.

Loading is `tf.saved_model.load`: no tfcaption model code runs, exactly what a TF Serving-like consumer
of the export does. The assets tfcaption exports carry (`assets/config.json`'s `serving` section and
`assets/vocab.txt`) are read when present, for the web page; any SavedModel with predict-style
signatures is served without them.
"""

import dataclasses
import json
import os
import re
import threading
import time

from tfcaption.serving.rest import ServingError, SignatureInfo

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
MAX_LOAD_ATTEMPTS = 3


def is_saved_model(path):
    return any(os.path.isfile(os.path.join(path, name)) for name in SAVED_MODEL_FILES)


def _versions_in(model_dir):
    """{version: path} of the integer subdirectories of `model_dir` that hold a SavedModel."""
    try:
        names = os.listdir(model_dir)
    except OSError:
        return {}
    return {int(name): os.path.join(model_dir, name) for name in names
            if re.fullmatch(r"\d+", name) and is_saved_model(os.path.join(model_dir, name))}


def discover(path):
    """`(layout, {model name: {version: path}})` for a root, model or version directory.

    Raises FileNotFoundError (no such directory) or ValueError (no SavedModel there), one line each.
    """
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no such directory: {path}")
    if is_saved_model(path):
        parent, base = os.path.split(path.rstrip(os.sep))
        if re.fullmatch(r"\d+", base):
            return "version", {os.path.basename(parent) or "model": {int(base): path}}
        return "version", {base: {1: path}}
    versions = _versions_in(path)
    if versions:
        return "model", {os.path.basename(path.rstrip(os.sep)): versions}
    models = {}
    for name in sorted(os.listdir(path)):
        if os.path.isdir(os.path.join(path, name)) and not name.startswith("."):
            found = _versions_in(os.path.join(path, name))
            if found:
                models[name] = found
    if not models:
        raise ValueError(f"not a SavedModel, a model directory (<version>/saved_model.pb) or an export root "
                         f"(<model>/<version>/saved_model.pb): {path}")
    return "root", models


def _read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def signature_defs(path):
    """TF Serving's `signature_def` map of the SavedModel at `path` as JSON-ready dicts (proto field names)."""
    from google.protobuf import json_format, text_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    pb = os.path.join(path, "saved_model.pb")
    if os.path.isfile(pb):
        with open(pb, "rb") as f:
            saved.ParseFromString(f.read())
    else:
        with open(os.path.join(path, "saved_model.pbtxt")) as f:
            text_format.Parse(f.read(), saved)
    graph = saved.meta_graphs[0]
    return {name: json_format.MessageToDict(signature, preserving_proto_field_name=True)
            for name, signature in sorted(graph.signature_def.items())}


@dataclasses.dataclass
class ServedVersion:
    """One loaded version: its callable signatures and what the metadata and page endpoints report."""

    name: str
    version: int
    path: str
    loaded: object
    signatures: dict  # name -> SignatureInfo (the callable ones)
    signature_def: dict  # name -> TF Serving JSON (all of them, __saved_model_init_op included)
    serving_config: dict  # assets/config.json's "serving" section, {} without one
    vocabulary: list  # assets/vocab.txt's tokens, [] without one

    def function(self, signature_name):
        return self.loaded.signatures[signature_name]

    def info(self):
        """What the web page reads: signatures with their inputs and outputs, serving settings, tokens."""
        return {
            "name": self.name, "version": self.version,
            "signatures": {name: {"inputs": {k: {"dtype": v.dtype, "shape": v.shape} for k, v in s.inputs.items()},
                                  "outputs": s.outputs}
                           for name, s in self.signatures.items()},
            "serving": self.serving_config, "vocabulary": self.vocabulary,
        }


def load_version(name, version, path, warmup=True):
    """Loads one SavedModel with `tf.saved_model.load` and, with `warmup`, calls each signature once."""
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    signatures = {key: SignatureInfo.from_concrete_function(key, fn) for key, fn in loaded.signatures.items()}
    if not signatures:
        raise ValueError(f"the SavedModel at {path} has no signatures to serve")
    config_text = _read_text(os.path.join(path, "assets", "config.json"))
    try:
        serving = (json.loads(config_text) or {}).get("serving") or {} if config_text else {}
    except json.JSONDecodeError:
        serving = {}
    vocab_text = _read_text(os.path.join(path, "assets", "vocab.txt"))
    vocabulary = vocab_text.split("\n") if vocab_text else []
    while vocabulary and not vocabulary[-1]:
        vocabulary.pop()
    served = ServedVersion(name, version, path, loaded, signatures, signature_defs(path), serving, vocabulary)
    if warmup:
        warm_up(served)
    return served


# The sampling signature's name in tfcaption exports (tfcaption.export.saved_model.SAMPLE_SIGNATURE; not
# imported from there, which would load the model code into the server).
SAMPLE_SIGNATURE = "sample"

# One row of neutral settings for a sampling signature (tfcaption.export.sampling): every setting off.
SAMPLING_WARMUP = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 0, "max_length": 0}


def warm_up(served):
    """One call per image-bytes signature on a small PNG (with neutral settings for the sampling signature,
    the default prompt for a prompt signature), so the first client does not pay for the kernels' start-up
    (TF Serving's SavedModel warm-up does the same with recorded requests)."""
    import tensorflow as tf

    png = tf.io.encode_png(tf.fill([8, 8, 3], tf.constant(128, tf.uint8)))
    for name, signature in served.signatures.items():
        names = set(signature.inputs)
        if names in ({"image_bytes"}, {"image_bytes", *SAMPLING_WARMUP}, {"image_bytes", "prompt"}):
            settings = {key: tf.constant([value], signature.inputs[key].dtype)
                        for key, value in SAMPLING_WARMUP.items() if key in names}
            if "prompt" in names:
                settings["prompt"] = tf.constant([""])  # "": the export's default prompt
            served.function(name)(image_bytes=tf.reshape(png, [1]), **settings)


@dataclasses.dataclass
class VersionState:
    """A version's state as TF Serving's model status reports it (START, LOADING, AVAILABLE, END)."""

    state: str = "START"
    error_code: str = "OK"
    error_message: str = ""
    attempts: int = 0

    def json(self, version):
        return {"version": str(version), "state": self.state,
                "status": {"error_code": self.error_code, "error_message": self.error_message}}


class ModelRepository:
    """The models and versions a server serves, kept in step with the directory.

    `refresh()` (blocking; the server calls it from a worker thread every `poll_seconds`) scans the
    directory, loads what is new and unloads what went away; `get`, `status` and `models` are safe to call
    from the event loop at any time (they read a dict that is swapped whole).
    """

    def __init__(self, path, num_versions=1, warmup=True, log=None):
        if num_versions < 0:
            raise ValueError("num_versions must be >= 0 (0: every version)")
        self.path = os.path.abspath(path)
        self.num_versions = num_versions
        self.warmup = warmup
        self.log = log or (lambda message: None)
        self.layout, _ = discover(self.path)
        self._served = {}  # name -> {version: ServedVersion}
        self._states = {}  # name -> {version: VersionState}
        self._lock = threading.Lock()
        self.refresh(first=True)

    def _aspired(self):
        """{name: {version: path}} that should be served now."""
        try:
            _, found = discover(self.path)
        except (FileNotFoundError, ValueError):
            found = {}
        if self.layout == "version":
            return found
        aspired = {}
        for name, versions in found.items():
            newest = sorted(versions, reverse=True)
            keep = newest if self.num_versions == 0 else newest[:self.num_versions]
            aspired[name] = {v: versions[v] for v in keep}
        return aspired

    def refresh(self, first=False):
        """Loads new aspired versions and unloads the others; returns the (name, version) pairs loaded.

        The first refresh raises ValueError when nothing could be loaded (a user-fixable start-up error).
        """
        with self._lock:
            aspired = self._aspired()
            loaded = []
            errors = []
            for name, versions in aspired.items():
                states = self._states.setdefault(name, {})
                served = self._served.get(name, {})
                for version, path in sorted(versions.items()):
                    state = states.setdefault(version, VersionState())
                    if version in served or state.attempts >= MAX_LOAD_ATTEMPTS:
                        continue
                    state.state, state.attempts = "LOADING", state.attempts + 1
                    started = time.monotonic()
                    try:
                        version_object = load_version(name, version, path, warmup=self.warmup)
                    except Exception as error:  # noqa: BLE001 - a bad version must not stop the server
                        message = f"{type(error).__name__}: {error}".splitlines()[0][:500]
                        state.state, state.error_code, state.error_message = "END", "UNKNOWN", message
                        errors.append(f"{name} version {version}: {message}")
                        self.log(f"could not load {name} version {version} from {path}: {message}")
                        continue
                    state.state, state.error_code, state.error_message, state.attempts = "AVAILABLE", "OK", "", 0
                    served = {**served, version: version_object}
                    loaded.append((name, version))
                    self.log(f"loaded {name} version {version} from {path} in {time.monotonic() - started:.1f} s")
                # Unload what is no longer aspired, once a newer aspired version is available.
                if served and any(v in served for v in versions):
                    for version in [v for v in served if v not in versions]:
                        served = {k: v for k, v in served.items() if k != version}
                        states[version].state = "END"
                        self.log(f"unloaded {name} version {version}")
                self._served = {**self._served, name: served}
            for name in [n for n in self._served if n not in aspired]:  # the model's directory went away
                for version in self._served[name]:
                    self._states[name][version].state = "END"
                    self.log(f"unloaded {name} version {version}")
                self._served = {k: v for k, v in self._served.items() if k != name}
            if first and not any(self._served.values()):
                raise ValueError(f"no SavedModel under {self.path} could be loaded: " + "; ".join(errors))
            return loaded

    def models(self):
        """{name: {version: ServedVersion}} being served now."""
        return self._served

    def get(self, name, version=None):
        """The ServedVersion a request names (the newest without `version`), or ServingError NOT_FOUND."""
        versions = self._served.get(name) or {}
        if version is None:
            if not versions:
                raise ServingError(f"Servable not found for request: Latest({name})", "NOT_FOUND")
            return versions[max(versions)]
        version = int(version)
        if version not in versions:
            raise ServingError(f"Servable not found for request: Specific({name}, {version})", "NOT_FOUND")
        return versions[version]

    def status(self, name, version=None):
        """TF Serving's GetModelStatus JSON for a model (every version it knows of) or one version."""
        states = self._states.get(name)
        if not states:
            raise ServingError(f"Could not find any versions of model {name}", "NOT_FOUND")
        if version is not None:
            version = int(version)
            if version not in states:
                raise ServingError(f"Could not find version {version} of model {name}", "NOT_FOUND")
            return {"model_version_status": [states[version].json(version)]}
        return {"model_version_status": [states[v].json(v) for v in sorted(states, reverse=True)]}

    def metadata(self, name, version=None):
        """TF Serving's GetModelMetadata JSON: the model spec and its signature_def map."""
        served = self.get(name, version)
        return {"model_spec": {"name": name, "signature_name": "", "version": str(served.version)},
                "metadata": {"signature_def": {"signature_def": served.signature_def}}}
