"""tfcaption-serve under load: requests/s and p50/p95/p99 latency at 1, 8 and 32 concurrent clients, with and
without dynamic batching, against direct SavedModel calls.

Every client sends single-image predict requests (encoded PNG shapes scenes, row format, `serving_default`)
back to back for `--seconds`, over its own kept-alive connection (`requests.Session`); the server is
`tfcaption-serve` in a child process (so it does not share this process's GIL, but it shares the machine's
cores with the clients). `direct` clients are threads of this process calling the loaded signature with
one image each, what an application embedding the SavedModel does. A warm-up of `--warmup` seconds precedes
every measurement.

    python benchmarks/serve_load.py                         # newest savedmodel/shapes_m2_small, else untrained
    python benchmarks/serve_load.py savedmodel/shapes_m2_small/1 --seconds 10 --clients 1,8,32

Without an export at the given path, an untrained `small` preset export is written to a temporary
directory: the default model's architecture, input size, beam size and caption length, plus a word-head
bias that rules <eos> out, so every call decodes the full 26 steps (an untrained model would otherwise end
every beam at the first step; a trained model's captions are shorter, so its calls are at most this long).
Prints a table and writes JSON (default benchmarks/results/serve_load.json).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from report import machine, write_report  # noqa: E402  (this folder)
from serving_latency import newest_version  # noqa: E402  (this folder)

DEFAULT_EXPORT = "savedmodel/shapes_m2_small"
DEFAULT_OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "serve_load.json")


def untrained_export(root):
    """An untrained `small` preset export (shapes vocabulary, the default run's caption length and beam)."""
    import keras

    from tfcaption.config import RunConfig
    from tfcaption.data.tokenizer import Vocabulary
    from tfcaption.datasets.shapes.dataset import ShapesConfig, generate_example
    from tfcaption.export.saved_model import export_saved_model
    from tfcaption.models import CaptionerBackbone, CaptionerConfig, ImageCaptioner

    keras.utils.set_random_seed(0)
    run = RunConfig()
    captions = [c for i in range(300) for c in generate_example(ShapesConfig(), "train", i)["captions"]]
    vocab = Vocabulary.build(captions)
    # A word-head bias (the preset has none; one add per step) that rules <eos> out, so that every call decodes
    # the full caption length: an untrained model otherwise ends every beam at once and measures nothing.
    config = CaptionerConfig.from_preset("small", vocab_size=vocab.size, max_length=run.data.max_tokens,
                                         output_bias=True)
    model = CaptionerBackbone.from_model_config(config)
    head = model.decoder.output_dense
    head.bias.assign(np.where(np.arange(vocab.size) == vocab.eos_id, -1e4, 0.0).astype("float32"))
    return export_saved_model(ImageCaptioner.from_backbone(model, vocab), root, "shapes_m2_small_untrained",
                              beam_size=run.export.beam_size, max_steps=run.data.max_decode_steps)


def shapes_images(count, image_size):
    from tfcaption.datasets.shapes.dataset import ShapesConfig, generate_example

    config = ShapesConfig(image_size=image_size)
    return [generate_example(config, "test", i)["image"] for i in range(count)]


def percentiles(latencies):
    ms = np.array(latencies) * 1000.0
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


def run_clients(clients, seconds, warmup, make_client):
    """`clients` threads each calling its `make_client(i)()` in a loop; returns requests/s and latencies."""
    stop_warmup = time.perf_counter() + warmup
    stop = stop_warmup + seconds
    latencies = [[] for _ in range(clients)]
    errors = [0] * clients

    def loop(i):
        call = make_client(i)
        while True:
            started = time.perf_counter()
            if started >= stop:
                return
            ok = call()
            finished = time.perf_counter()
            if started >= stop_warmup and finished <= stop:
                if ok:
                    latencies[i].append(finished - started)
                else:
                    errors[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = [x for per in latencies for x in per]
    return {"clients": clients, "requests": len(done), "errors": sum(errors),
            "requests_per_s": len(done) / seconds, **percentiles(done or [float("nan")])}


def direct_client(signature, images):
    import tensorflow as tf

    def make(i):
        feeds = [tf.constant([image]) for image in images]
        count = [i]

        def call():
            count[0] += 1
            signature(image_bytes=feeds[count[0] % len(feeds)])["caption"].numpy()
            return True

        return call

    return make


def http_client(url, model, images):
    import base64

    import requests

    bodies = [json.dumps({"instances": [{"b64": base64.b64encode(image).decode()}]}) for image in images]

    def make(i):
        session = requests.Session()
        count = [i]

        def call():
            count[0] += 1
            response = session.post(f"{url}/v1/models/{model}:predict", data=bodies[count[0] % len(bodies)],
                                    timeout=120)
            return response.status_code == 200

        return call

    return make


class Server:
    """`tfcaption-serve EXPORT --port 0 --no-grpc ARGS` in a child process (REST is what is measured)."""

    def __init__(self, export, *args):
        command = [sys.executable, "-m", "tfcaption.cli.serve", export, "--port", "0", "--no-grpc", "--max-queue",
                   "4096", *args]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.url = None
        for line in self.process.stdout:
            found = re.search(r"listening on (http://[\d.]+:\d+)/", line)
            if found:
                self.url = found.group(1)
                break
        if self.url is None:
            raise SystemExit(f"tfcaption-serve did not start (exit {self.process.wait()})")

    def stats(self):
        import requests

        return requests.get(f"{self.url}/tfcaption/stats", timeout=10).json()

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=60)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", nargs="?", default=DEFAULT_EXPORT,
                        help=f"SavedModel or model directory (default {DEFAULT_EXPORT}; without one, an untrained "
                             f"small preset export)")
    parser.add_argument("--clients", default="1,8,32", help="concurrent clients, comma-separated")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per setting")
    parser.add_argument("--warmup", type=float, default=1.5, help="unmeasured seconds before each setting")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--batch-timeout-ms", type=float, default=5.0)
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    clients = [int(c) for c in args.clients.split(",")]

    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        export = newest_version(args.export)
        untrained = export is None
        if untrained:
            print(f"no export at {args.export}: writing an untrained small-preset export", flush=True)
            export = untrained_export(tmp)
        with open(os.path.join(export, "assets", "config.json")) as f:
            serving = json.load(f)["serving"]
        model = os.path.basename(os.path.dirname(os.path.abspath(export)))
        images = shapes_images(32, serving["image_size"] if isinstance(serving["image_size"], int) else 96)

        rows = []
        signature = tf.saved_model.load(export).signatures["serving_default"]
        # How long the captions are: decoding stops once every beam has ended, so this sets the work per call.
        words = float(np.mean([len(c.split()) for c in signature(image_bytes=tf.constant(images))["caption"].numpy()]))
        for c in clients:
            rows.append({"mode": "direct SavedModel", **run_clients(c, args.seconds, args.warmup,
                                                                     direct_client(signature, images))})
            print(f"direct, {c} clients: {rows[-1]['requests_per_s']:.1f} req/s", flush=True)
        del signature
        modes = [("tfcaption-serve, batching", ["--max-batch", str(args.max_batch), "--batch-timeout-ms",
                                                  str(args.batch_timeout_ms)]),
                 ("tfcaption-serve, no batching", ["--no-batching"])]
        for mode, flags in modes:
            server = Server(export, *flags)
            try:
                for c in clients:
                    before = server.stats()["signatures"]
                    row = {"mode": mode,
                           **run_clients(c, args.seconds, args.warmup, http_client(server.url, model, images))}
                    after = [s for s in server.stats()["signatures"] if s["signature"] == "serving_default"][0]
                    prior = [s for s in before if s["signature"] == "serving_default"]
                    calls = after["calls"] - (prior[0]["calls"] if prior else 0)
                    images_done = after["images"] - (prior[0]["images"] if prior else 0)
                    row["images_per_call"] = images_done / calls if calls else None
                    rows.append(row)
                    print(f"{mode}, {c} clients: {row['requests_per_s']:.1f} req/s", flush=True)
            finally:
                server.stop()

    host = machine()
    print(f"\n{model}{' (untrained)' if untrained else ''}: beam {serving['beam_size']}, {serving['max_steps']} steps, "
          f"{serving['image_size']} px, captions of {words:.1f} words on average; single-image requests; "
          f"{args.seconds:g} s per row; {host['cpu']}")
    print(f"{'mode':<30} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'img/call':>8}")
    for r in sorted(rows, key=lambda r: (r["clients"], r["mode"])):
        per_call = f"{r['images_per_call']:.1f}" if r.get("images_per_call") else "-"
        print(f"{r['mode']:<30} {r['clients']:>7} {r['requests_per_s']:>8.1f} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} "
              f"{r['p99_ms']:>8.1f} {per_call:>8}")
    write_report(args.output, {
        "machine": host, "export": {"model": model, "untrained": untrained, **{
            k: serving[k] for k in ("beam_size", "max_steps", "image_size")}, "mean_caption_words": words},
        "seconds": args.seconds, "warmup": args.warmup, "max_batch": args.max_batch,
        "batch_timeout_ms": args.batch_timeout_ms, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
