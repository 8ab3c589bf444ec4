"""Serving latency and throughput of exported SavedModels, called the way a server calls them.

Loads each SavedModel with `tf.saved_model.load` and times its `serving_default` signature on encoded
PNG shapes scenes (bytes in, captions out: decode, encode, decode loop, detokenise):
p50 / p95 latency of single-image requests (batch 1) and images/second at batch 32.

Measured exports: the one given as an argument (default: the newest version under
savedmodel/shapes_m2_small, when present), plus a beam-1 and a beam-5 export written from a run
directory (default runs/shapes-small) into a temporary directory.

    python benchmarks/serving_latency.py [EXPORT_DIR] [--run runs/shapes-small] [--requests 200]

Prints a table and writes benchmarks/results/serving_latency.json.
"""

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from report import machine, write_report  # noqa: E402  (this folder)

DEFAULT_EXPORT = "savedmodel/shapes_m2_small"
DEFAULT_RUN = "runs/shapes-small"
DEFAULT_OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "serving_latency.json")


def newest_version(path):
    """`path` itself when it holds saved_model.pb, else its highest integer version (None if none)."""
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    if not os.path.isdir(path):
        return None
    versions = [n for n in os.listdir(path) if n.isdigit() and os.path.exists(os.path.join(path, n, "saved_model.pb"))]
    return os.path.join(path, max(versions, key=int)) if versions else None


def shapes_images(count, image_size):
    """Encoded PNG shapes scenes (test split), like a client would send."""
    from tfcaption.datasets.shapes.dataset import ShapesConfig, generate_example

    config = ShapesConfig(image_size=image_size)
    return [generate_example(config, "test", i)["image"] for i in range(count)]


def measure(path, images, requests, batch_size, batches):
    """Latency percentiles (ms) at batch 1 and images/second at `batch_size` for one export."""
    signature = tf.saved_model.load(path).signatures["serving_default"]
    singles = [tf.constant([image]) for image in images]
    for single in singles[:5]:  # warm-up: first calls build kernels and caches
        signature(image_bytes=single)
    latencies = []
    for i in range(requests):
        started = time.perf_counter()
        signature(image_bytes=singles[i % len(singles)])["caption"].numpy()
        latencies.append(time.perf_counter() - started)
    batch = tf.constant([images[i % len(images)] for i in range(batch_size)])
    signature(image_bytes=batch)["caption"].numpy()
    started = time.perf_counter()
    for _ in range(batches):
        signature(image_bytes=batch)["caption"].numpy()
    elapsed = time.perf_counter() - started
    latencies_ms = np.array(latencies) * 1000.0
    return {
        "p50_ms": float(np.percentile(latencies_ms, 50)),
        "p95_ms": float(np.percentile(latencies_ms, 95)),
        "mean_ms": float(latencies_ms.mean()),
        "images_per_s_batch": float(batch_size * batches / elapsed),
        "batch_size": batch_size,
        "requests": requests,
    }


def export_from_run(run_dir, root, beam_size):
    from tfcaption.export.saved_model import export_run
    from tfcaption.training.run_directory import load_run

    captioner, run_config = load_run(run_dir)
    return export_run(captioner, run_config, root, f"beam{beam_size}", beam_size=beam_size)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", nargs="?", default=DEFAULT_EXPORT, help=f"SavedModel (default {DEFAULT_EXPORT})")
    parser.add_argument("--run", default=DEFAULT_RUN, help="run directory for the beam-1/beam-5 exports")
    parser.add_argument("--beam-sizes", default="1,5")
    parser.add_argument("--requests", type=int, default=200, help="batch-1 requests timed per export")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)

    exports = {}
    given = newest_version(args.export)
    if given:
        exports[f"given ({given})"] = given
    with tempfile.TemporaryDirectory() as root:
        if os.path.isdir(args.run):
            for beam in (int(b) for b in args.beam_sizes.split(",")):
                exports[f"beam {beam}"] = export_from_run(args.run, root, beam)
        if not exports:
            parser.error(f"no export at {args.export} and no run directory at {args.run}")
        results = {}
        for name, path in exports.items():
            with open(os.path.join(path, "assets", "config.json")) as f:
                serving = json.load(f)["serving"]
            images = shapes_images(64, serving["image_size"])
            results[name] = {"beam_size": serving["beam_size"], "max_steps": serving["max_steps"],
                             **measure(path, images, args.requests, args.batch_size, args.batches)}

    print(f"{'export':<48} {'beam':>4} {'p50 ms':>8} {'p95 ms':>8} {f'img/s @{args.batch_size}':>10}")
    for name, r in results.items():
        print(f"{name:<48} {r['beam_size']:>4} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['images_per_s_batch']:>10.1f}")
    devices = [d.device_type for d in tf.config.list_physical_devices()]
    write_report(args.output, {"machine": {**machine(), "devices": devices}, "run": args.run, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
