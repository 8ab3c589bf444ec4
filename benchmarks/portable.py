"""A run's model in every portable format on this CPU: file size, single-image latency and test-split quality.

From one run directory, in one process: the SavedModel (TF Serving's export, loaded by TensorFlow), the
pixels-to-tokens `tf.function` that the LiteRT and ONNX files are converted from (run by TensorFlow), LiteRT
float32 / float16 / dynamic int8 / int8 (ai-edge-litert's interpreter) and ONNX (ONNX Runtime, CPU), each with
greedy search and with the run's beam size. Per format: the file size, single-image latency (p50, p95) and
images/s at batch 1, pixels to tokens (uint8 [1, H, W, 3] in, token ids out; the SavedModel's row is bytes to
caption, its signature's only form), and the test split's CIDEr-D and grounding F1 (shapes; scored as
tfcaption-evaluate scores them, with Python tokenisation) of the captions each file gives, with the share of
captions identical to the float32 function's. The formats take turns call by call while timed, so that
each meets the same load on a shared CPU. The headline is the ratio of TensorFlow's p50 latency to
LiteRT float32's on the same function.

    python benchmarks/portable.py --model runs/shapes-small [--data shapes] [--images 1000] [--requests 200]
    python benchmarks/portable.py --model RUN --quick     # a smoke test: the run's beam only, a few images

Prints a table and writes benchmarks/results/portable.json (with the CPU: model name and its AVX-512 / AMX
flags).
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # report, also when loaded by path

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from report import machine, write_report  # noqa: E402  (this folder)

DEFAULT_OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "portable.json")
LITERT_FILES = {"LiteRT float32": None, "LiteRT float16": "float16", "LiteRT dynamic int8": "dynamic_int8",
                "LiteRT int8": "int8"}
REFERENCE = "TF function"


def test_examples(data_dir, count, split="test"):
    """The first `count` examples of `split`: image bytes, references and scene, in the records' order."""
    from tfcaption.data.records import read_records

    examples = []
    for record in read_records(data_dir, split).take(count).as_numpy_iterator():
        examples.append({"image_id": record["image_id"].decode(), "image": record["image"],
                         "references": [c.decode() for c in record["captions"]], "scene": record["scene"].decode()})
    return examples


def timed(calls, inputs, requests):
    """Latency (ms) of `requests` single-image calls per format, cycling over `inputs` ({format: inputs}).

    The formats take turns call by call, so that on a shared CPU each meets the same load and their ratios
    hold even where the absolute times do not."""
    for name, call in calls.items():
        for value in inputs[name][:3]:  # first calls build kernels and caches
            call(value)
    latencies = {name: [] for name in calls}
    for i in range(requests):
        for name, call in calls.items():
            value = inputs[name][i % len(inputs[name])]
            started = time.perf_counter()
            call(value)
            latencies[name].append(time.perf_counter() - started)
    rows = {}
    for name, seconds in latencies.items():
        ms = np.array(seconds) * 1000.0
        rows[name] = {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
                      "images_per_s": float(1000.0 / ms.mean()), "requests": requests}
    return rows


def directory_size(path):
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)


def runners(captioner, run_config, beam_size, root, formats):
    """{format: (size in bytes or None, pixels -> tokens [k, T] or None, bytes -> caption)} for one beam size."""
    from tfcaption.export.int8 import calibration_pixels
    from tfcaption.export.litert import export_litert
    from tfcaption.export.onnx import export_onnx
    from tfcaption.export.portable import pixels_to_tokens
    from tfcaption.export.portable_runtime import PortableBackend, _litert_runner, _onnx_runner
    from tfcaption.export.saved_model import export_run

    steps = run_config.data.max_decode_steps
    out = {}
    if "SavedModel" in formats:
        path = export_run(captioner, run_config, os.path.join(root, "savedmodel"), f"beam{beam_size}",
                          beam_size=beam_size)
        signature = tf.saved_model.load(path).signatures["serving_default"]
        caption = lambda data: signature(image_bytes=tf.constant([data]))["caption"].numpy()[0].decode()  # noqa: E731
        out["SavedModel"] = (directory_size(path), None, caption)
    if REFERENCE in formats:
        function = pixels_to_tokens(captioner, beam_size, steps)
        out[REFERENCE] = (None, lambda pixels: function(tf.constant(pixels))["tokens"].numpy()[0], None)
    files = {name: ("litert", quantize) for name, quantize in LITERT_FILES.items()}
    files["ONNX"] = ("onnx", None)
    for name, (fmt, quantize) in files.items():
        if name not in formats:
            continue
        output = os.path.join(root, f"{name.replace(' ', '-')}-{beam_size}")
        if fmt == "litert":
            # Full int8 calibrates as tfcaption-export does by default: the run's first validation images.
            calibration = calibration_pixels(captioner, run_config) if quantize == "int8" else None
            path = export_litert(captioner, output, beam_size, steps, quantize=quantize,
                                 calibration_pixels=calibration)
            run = _litert_runner(path)
        else:
            path = export_onnx(captioner, output, beam_size, steps)
            run = _onnx_runner(path)
        backend = PortableBackend(path)
        out[name] = (os.path.getsize(path), lambda pixels, run=run: np.asarray(run({"pixels": pixels})["tokens"])[0],
                     lambda data, backend=backend: backend([data])[0][0])
    return out


def measure(captioner, run_config, examples, beam_size, requests, formats, use_java):
    """One row per format for one beam size: size, latency, and the quality of its captions on `examples`."""
    from tfcaption.export.portable import image_pixels
    from tfcaption.metrics.report import evaluate_results

    size = captioner.backbone.image_encoder.image_size
    pixels = [image_pixels(e["image"], size)[None] for e in examples]
    vocab = captioner.preprocessor.vocabulary
    with tempfile.TemporaryDirectory() as root:
        formats = runners(captioner, run_config, beam_size, root, formats)
        # Pixel formats are timed pixels to tokens; the SavedModel, which only takes bytes, bytes to caption.
        calls = {name: tokens or caption for name, (_, tokens, caption) in formats.items()}
        inputs = {name: pixels if tokens else [e["image"] for e in examples]
                  for name, (_, tokens, _) in formats.items()}
        rows = timed(calls, inputs, requests)
        for name, (file_size, tokens, caption) in formats.items():
            captions = ([vocab.decode(tokens(p)[0]) for p in pixels] if tokens else
                        [caption(e["image"]) for e in examples])
            results = [dict(e, caption=c) for e, c in zip(examples, captions)]
            scores = evaluate_results(results, use_java=use_java)["model"]
            rows[name].update(size_bytes=file_size, cider_d=scores["cider_d"],
                              grounding_f1=scores.get("grounding_f1"), captions=captions)
    reference = rows.get(REFERENCE, {}).get("captions")
    for row in rows.values():
        captions = row.pop("captions")
        row["same_captions_as_float32"] = (None if reference is None else
                                           float(np.mean([a == b for a, b in zip(captions, reference)])))
    return rows


def table(results):
    def cell(value, fmt):
        return format("-", f">{fmt.split('.')[0]}") if value is None else format(value, fmt)

    lines = [f"{'decoding':<8} {'format':<20} {'size MB':>8} {'p50 ms':>8} {'p95 ms':>8} {'img/s':>8} "
             f"{'CIDEr-D':>8} {'Ground-F1':>9} {'same':>6}"]
    for decoding, rows in results.items():
        for name, r in rows.items():
            size = None if r["size_bytes"] is None else r["size_bytes"] / 1e6
            lines.append(f"{decoding:<8} {name:<20} {cell(size, '8.2f')} {r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} "
                         f"{r['images_per_s']:>8.1f} {r['cider_d']:>8.3f} {cell(r['grounding_f1'], '9.3f')} "
                         f"{cell(r['same_captions_as_float32'], '6.3f')}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a run directory (tfcaption-train's output)")
    parser.add_argument("--data", default=None, help="dataset spec (default: the run's)")
    parser.add_argument("--images", type=int, default=1000, help="test images captioned per format")
    parser.add_argument("--requests", type=int, default=200, help="single-image calls timed per format")
    parser.add_argument("--java", action="store_true", help="PTB tokenisation through java, as the run's report")
    parser.add_argument("--quick", action="store_true", help="smoke test: the run's beam only, 8 images, 5 calls")
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.model, "config.json")):
        parser.exit(2, f"--model {args.model}: not a run directory (no config.json).\n")
    images, requests = (min(args.images, 8), min(args.requests, 5)) if args.quick else (args.images, args.requests)

    from tfcaption.data.catalog import resolve_dataset
    from tfcaption.training.run_directory import load_run

    captioner, run_config = load_run(args.model)
    data = run_config.data
    data_dir = resolve_dataset(args.data or data.spec, data.root or None, data.options if not args.data else {},
                               verbose=False)
    examples = test_examples(data_dir, images)
    beam = run_config.export.beam_size
    formats = ["SavedModel", REFERENCE, *LITERT_FILES, "ONNX"]
    decodings = {f"beam {beam}": beam} if args.quick else {"greedy": 1, f"beam {beam}": beam}
    results = {name: measure(captioner, run_config, examples, size, requests, formats, args.java)
               for name, size in decodings.items()}
    print(table(results))
    speedup = {name: rows[REFERENCE]["p50_ms"] / rows["LiteRT float32"]["p50_ms"] for name, rows in results.items()}
    for name, ratio in speedup.items():
        print(f"{name}: LiteRT float32 p50 latency {ratio:.1f}x lower than TensorFlow on the same function")
    write_report(args.output, {
        "machine": machine(), "run": os.path.abspath(args.model), "test_images": len(examples), "beam_size": beam,
        "tokenizer": "ptb" if args.java else "python", "quick": args.quick, "results": results,
        "tensorflow_over_litert_float32_p50": speedup,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
