"""The small untrained SavedModel export the export tests share (`tiny_export`), image helpers, and the
TensorFlow-only child process that reads exports (`TensorFlowOnlyProcess`)."""

import io
import json
import os
import select
import subprocess
import sys
import time

import numpy as np

from tests.helpers.tiny import TINY_MODEL

WORDS = "a red blue green circle square star small large left of above below the two".split()
TINY_MAX_STEPS = 6


def tiny_export(root, beam_size=2, max_pixels=None, seed=0):
    """Exports an untrained tiny captioner under `root`; returns the version directory."""
    import keras

    from tfcaption.data.tokenizer import Vocabulary
    from tfcaption.export.saved_model import export_saved_model
    from tfcaption.models import CaptionerBackbone, CaptionerConfig, ImageCaptioner

    keras.utils.set_random_seed(seed)
    vocab = Vocabulary.build([" ".join(WORDS)])
    model = CaptionerBackbone.from_model_config(
        CaptionerConfig(vocab_size=vocab.size, max_length=TINY_MAX_STEPS + 1, **TINY_MODEL))
    options = {} if max_pixels is None else {"max_pixels": max_pixels}
    return export_saved_model(ImageCaptioner.from_backbone(model, vocab), str(root), "tiny", beam_size=beam_size,
                              max_steps=TINY_MAX_STEPS, **options)


def encode(array, fmt="PNG", mode=None):
    """Encoded image bytes of a numpy array through Pillow."""
    from PIL import Image

    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def random_rgb(height=40, width=48, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8)


def quiet_env():
    """Environment for child processes: TensorFlow's start-up chatter off."""
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


# The program of `TensorFlowOnlyProcess`: reads one JSON request a line, answers one marked JSON line.
_TENSORFLOW_ONLY_PROGRAM = r"""
import json, sys, traceback
import numpy as np, tensorflow as tf

for line in sys.stdin:
    request = json.loads(line)
    try:
        loaded = tf.saved_model.load(request["export"])
        inputs = np.load(request["inputs"], allow_pickle=True)
        name = request["input"]
        feed = tf.constant(list(inputs)) if name == "image_bytes" else tf.constant(inputs, tf.float32)
        out = loaded.signatures[request.get("signature", "serving_default")](**{name: feed})
        answer = {"captions": [c.decode("utf-8") for c in out["caption"].numpy()],
                  **{key: out[name].numpy().tolist() for key, name in (("scores", "score"), ("tokens", "tokens"))
                     if name in out}}
        del loaded, out
    except Exception:
        answer = {"error": traceback.format_exc()}
    answer["modules"] = sorted(m for m in sys.modules if m.startswith(("tfcaption", "tensorflow_text")))
    sys.stdout.write("\n@@answer " + json.dumps(answer) + "\n")
    sys.stdout.flush()
"""
_ANSWER = b"\n@@answer "


class TensorFlowOnlyProcess:
    """A child Python process that imports TensorFlow and numpy, nothing of tfcaption's nor tensorflow-text,
    and captions inputs with SavedModels' signatures (`serving_default` unless a call names another): what a
    TF Serving-like consumer of an export has. One process serves every request (TensorFlow is imported once,
    not once per export); it is started again if it died. `caption` returns the captions and the tfcaption / tensorflow-text modules
    the process has imported by then (a list that must stay empty)."""

    def __init__(self, workdir):
        self.workdir = str(workdir)
        self._process = self._stderr = None
        self._requests = 0

    def _start(self):
        if self._stderr is not None:
            self._stderr.close()
        self._stderr = open(os.path.join(self.workdir, "stderr.txt"), "w+b")
        # cwd: a folder without the repository's packages, so none of them can be imported by accident.
        self._process = subprocess.Popen([sys.executable, "-c", _TENSORFLOW_ONLY_PROGRAM], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self._stderr, cwd=self.workdir,
                                         env=quiet_env(), bufsize=0)
        self._buffer = b""

    def _stderr_tail(self):
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")[-3000:]

    def caption(self, export, inputs, input_name="image_bytes", timeout=300):
        """Captions `inputs` (encoded images for "image_bytes", a float array for "features") with the
        SavedModel at `export`; returns `(captions, foreign_modules)`."""
        answer = self.predict(export, inputs, input_name=input_name, timeout=timeout)
        return answer["captions"], answer["modules"]

    def predict(self, export, inputs, signature="serving_default", input_name="image_bytes", timeout=300):
        """Calls the SavedModel's `signature` on `inputs`; returns {"captions", "scores", "tokens" (lists, one
        entry per input), "modules" (the foreign modules imported by then)}."""
        if self._process is None or self._process.poll() is not None:
            self._start()
        self._requests += 1
        payload = os.path.join(self.workdir, f"inputs-{self._requests}.npy")
        array = np.array(list(inputs), dtype=object) if input_name == "image_bytes" else np.asarray(inputs, np.float32)
        np.save(payload, array, allow_pickle=True)
        request = {"export": str(export), "inputs": payload, "input": input_name, "signature": signature}
        try:
            self._process.stdin.write((json.dumps(request) + "\n").encode())
            self._process.stdin.flush()
        except BrokenPipeError:  # it died: reading says how
            pass
        deadline = time.monotonic() + timeout
        while True:
            start = self._buffer.find(_ANSWER)
            end = -1 if start < 0 else self._buffer.find(b"\n", start + len(_ANSWER))
            if end >= 0:
                answer = json.loads(self._buffer[start + len(_ANSWER):end])
                self._buffer = self._buffer[end:]
                break
            left = deadline - time.monotonic()
            ready = select.select([self._process.stdout], [], [], max(left, 0))[0] if left > 0 else []
            if not ready:
                self._process.kill()
                self._process.wait()
                tail = self._stderr_tail()
                self.close()
                raise AssertionError(f"no answer from the TensorFlow-only process in {timeout} s for {export}:\n{tail}")
            chunk = os.read(self._process.stdout.fileno(), 1 << 16)
            if not chunk:
                self._process.wait()
                raise AssertionError(f"the TensorFlow-only process exited ({self._process.returncode}) reading "
                                     f"{export}:\n{self._stderr_tail()}")
            self._buffer += chunk
        assert "error" not in answer, f"{export}:\n{answer['error'][-3000:]}"
        return answer

    def close(self):
        if self._process is not None:
            if self._process.poll() is None:
                self._process.stdin.close()
                try:
                    self._process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            self._stderr.close()
            self._stderr = self._process = None
