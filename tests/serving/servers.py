"""Servers for the serving tests, on 127.0.0.1 and a free port: uvicorn in a thread of the test process
(`InProcessServer`, fast: the models are loaded once per session) and `tfcaption-serve` in a child process
(`CliServer`, what a user runs), plus request helpers and test images."""

import base64
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import requests

from tests.helpers.exports import encode, quiet_env, random_rgb


def b64(data):
    return {"b64": base64.b64encode(data).decode("ascii")}


def shapes_png(index, size=96, split="test"):
    """An encoded PNG scene of the built-in shapes dataset."""
    from tfcaption.datasets.shapes.dataset import ShapesConfig, generate_example

    return generate_example(ShapesConfig(image_size=size), split, index)["image"]


def good_images():
    """Good images of several formats and sizes (bytes)."""
    images = [shapes_png(i) for i in range(6)]
    images += [encode(random_rgb(32, 32, seed=1)), encode(random_rgb(60, 45, seed=2), "JPEG"),
               encode(random_rgb(50, 70, seed=3), "BMP"), encode(random_rgb(20, 90, seed=4), "PNG", mode="L")]
    return images


def png_chunk(kind, data):
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def decompression_bomb(side=20000):
    """A valid 1-bit grayscale PNG of side x side pixels (side**2 pixels), a few kB on the wire: zeros compress
    about 1000:1, so decoding it would allocate side**2 * 3 floats."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])  # bit depth 1, grayscale
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def direct_predictions(loaded, images, signature="serving_default"):
    """What the SavedModel itself returns for each image alone: a list of {name: numpy value}."""
    import tensorflow as tf

    out = []
    for image in images:
        result = loaded.signatures[signature](image_bytes=tf.constant([image]))
        out.append({name: value.numpy()[0] for name, value in result.items()})
    return out


def assert_matches(prediction, reference):
    """A JSON prediction of the server equals a direct call's outputs (scores to float32 rounding)."""
    assert prediction["caption"] == reference["caption"].decode("utf-8")
    assert prediction["tokens"] == reference["tokens"].tolist()
    np.testing.assert_allclose(prediction["score"], reference["score"], rtol=1e-4, atol=1e-4)


class InProcessServer:
    """The serving app on uvicorn in a thread of this process; `url` is its base URL. With `grpc=True` TF
    Serving's gRPC API runs beside it on the same event loop, at `grpc_target`."""

    def __init__(self, repository, options=None, grpc=False):
        from tfcaption.serving.app import ServingApp
        from tfcaption.serving.server import bind, uvicorn_server

        self.serving = ServingApp(repository, options)
        self.sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.grpc_target = None
        self.server = uvicorn_server(self.serving)
        self.thread = threading.Thread(target=self._run, args=(("127.0.0.1", 0) if grpc else None,), daemon=True)

    def _run(self, grpc_address):
        import asyncio

        from tfcaption.serving.server import run

        asyncio.run(run(self.server, self.serving, self.sock, grpc_address))

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the in-process server did not start"
            time.sleep(0.02)
        if self.serving.grpc_port is not None:
            self.grpc_target = f"127.0.0.1:{self.serving.grpc_port}"
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()

    def stats(self):
        return requests.get(f"{self.url}/tfcaption/stats", timeout=10).json()


def signature_stats(stats, signature="serving_default"):
    rows = [s for s in stats["signatures"] if s["signature"] == signature]
    return rows[0] if rows else None


class CliServer:
    """`tfcaption-serve PATH --port 0 --grpc-port 0 ARGS...` in a child process; waits for its "listening on"
    line (`url`) and, unless ARGS hold --no-grpc, its gRPC line (`grpc_target`, host:port)."""

    def __init__(self, path, *args, workdir, timeout=120):
        self.log_path = os.path.join(str(workdir), f"serve-{time.monotonic_ns()}.log")
        self.log = open(self.log_path, "w+b")
        args = [str(arg) for arg in args]
        if "--no-grpc" not in args and "--grpc-port" not in args:
            args = ["--grpc-port", "0", *args]
        command = [sys.executable, "-m", "tfcaption.cli.serve", str(path), "--port", "0", *args]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self.log, env=quiet_env(),
                                        cwd=str(workdir))
        self.lines = []
        deadline = time.monotonic() + timeout
        self.url = self.grpc_target = None
        while self.url is None or (self.grpc_target is None and "--no-grpc" not in args):
            line = self.process.stdout.readline().decode("utf-8", "replace")
            if not line:
                self.process.wait(timeout=30)
                raise AssertionError(f"tfcaption-serve exited ({self.process.returncode}) before listening:\n"
                                     f"{self.output()}")
            self.lines.append(line)
            found = re.search(r"listening on (http://127\.0\.0\.1:\d+)/", line)
            if found:
                self.url = found.group(1)
            found = re.search(r"gRPC .* on (127\.0\.0\.1:\d+)", line)
            if found:
                self.grpc_target = found.group(1)
            assert time.monotonic() < deadline, f"tfcaption-serve did not start in {timeout} s:\n{self.output()}"
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in iter(self.process.stdout.readline, b""):
            self.lines.append(line.decode("utf-8", "replace"))

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return "".join(self.lines) + self.log.read().decode("utf-8", "replace")[-4000:]

    @property
    def pid(self):
        return self.process.pid

    def memory_kb(self):
        """(VmRSS, VmHWM) of the server process in kB."""
        with open(f"/proc/{self.pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])

    def terminate(self, timeout=60):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.close()

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()


def predict(url, model, body, version=None, signature=None, timeout=60):
    """POST a predict request; `body` a dict (sent as JSON) or bytes/str (sent as is). Returns the response."""
    path = f"/v1/models/{model}" + (f"/versions/{version}" if version is not None else "") + ":predict"
    if isinstance(body, dict):
        if signature:
            body = {**body, "signature_name": signature}
        import json

        body = json.dumps(body)
    return requests.post(url + path, data=body, timeout=timeout)


def png_bytes_of(array):
    """PNG bytes of a uint8 array (Pillow)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def copy_version(source, model_dir, version):
    """Copies a version directory into `model_dir/version` the way an export lands: written aside, renamed."""
    staging = os.path.join(str(model_dir), f".staging-{version}")
    shutil.copytree(source, staging)
    os.rename(staging, os.path.join(str(model_dir), str(version)))
    return os.path.join(str(model_dir), str(version))
