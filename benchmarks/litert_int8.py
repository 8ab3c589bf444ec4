"""Full integer (int8) LiteRT conversion of a run's pixels-to-tokens function, calibrated on its validation images.

Issue 31 asks for `--quantize int8` with the run's validation images as the representative dataset, if the
converter accepts the decoding loop. This script tries it, each attempt in its own child process started with
`python -X faulthandler` (a crash must not end the script, and faulthandler prints the Python frame it died
in; where gdb is installed, each function's first crash is rerun under it for the native frames), for the
greedy and the run's beam-size function and, as a control without the loop, the image encoder alone
(pixels -> encoder outputs). Converter settings tried (all with `Optimize.DEFAULT` and the
representative dataset; the function frozen as `tfcaption.export.litert` freezes it):

- int8 only: `supported_ops=[TFLITE_BUILTINS_INT8]` (input and output types left as they are: uint8 pixels
  in, int32 tokens and float32 scores out);
- float fallback: `[TFLITE_BUILTINS, TFLITE_BUILTINS_INT8]`;
- float fallback with `experimental_new_quantizer=False` (the older calibrate-and-quantize path), with
  `_experimental_disable_per_channel=True`, with `experimental_enable_resource_variables=False`, and with
  `_experimental_calibrate_only=True` (the calibration alone, no quantization);
- the StableHLO quantizer (`experimental_use_stablehlo_quantizer=True`, which calibrates in TensorFlow, not
  in LiteRT's calibrator; it converts from a SavedModel only, so the function is saved as one first).

The representative images are the first --images of the run's validation split, decoded and resized as
`tfcaption.export.portable.image_pixels` does it (the files' own input). A file that converts is run by
ai-edge-litert's interpreter on the first --test-images test images and compared with the float32 file:
the share of identical captions and both files' CIDEr-D (as benchmarks/portable.py scores them).

    python benchmarks/litert_int8.py --model runs/shapes-small [--images 100] [--test-images 100]

Prints a table and writes benchmarks/results/litert_int8.json.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # this folder's helpers

import numpy as np  # noqa: E402

DEFAULT_OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "litert_int8.json")
FALLBACK = ["TFLITE_BUILTINS", "TFLITE_BUILTINS_INT8"]
VARIANTS = {
    "int8 only": {"ops": ["TFLITE_BUILTINS_INT8"]},
    "float fallback": {"ops": FALLBACK},
    "fallback, old quantizer": {"ops": FALLBACK, "attrs": {"experimental_new_quantizer": False}},
    "fallback, no per-channel": {"ops": FALLBACK, "attrs": {"_experimental_disable_per_channel": True}},
    "fallback, no resource variables": {"ops": FALLBACK, "attrs": {"experimental_enable_resource_variables": False}},
    "fallback, calibrate only": {"ops": FALLBACK, "attrs": {"_experimental_calibrate_only": True}},
    "StableHLO quantizer": {"ops": FALLBACK, "attrs": {"experimental_use_stablehlo_quantizer": True},
                            "saved_model": True},
}
ENCODER = "encoder only"
ENCODER_VARIANTS = ("int8 only", "float fallback")
STACK_FRAMES = 6


def encoder_function(captioner):
    """The control without a loop: uint8 pixels [1, H, W, 3] -> the image encoder's outputs."""
    import tensorflow as tf

    from tfcaption.export.portable import input_spec

    model = captioner._require_backbone()

    def encoded(pixels):
        outputs, _ = model.encode(tf.cast(pixels, tf.float32), training=False)
        return {"encoder_outputs": outputs}

    return tf.function(encoded, input_signature=[input_spec(captioner)])


def target_function(captioner, run_config, target):
    """The function an attempt converts: "encoder only", or the pixels-to-tokens function ("greedy" / "beam K")."""
    from tfcaption.export.portable import pixels_to_tokens

    if target == ENCODER:
        return encoder_function(captioner)
    beam = 1 if target == "greedy" else int(target.split()[1])
    return pixels_to_tokens(captioner, beam, run_config.data.max_decode_steps)


def int8_tensor_share(content):
    """The share of the file's tensors (all subgraphs, the loop's included) stored as int8."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAs(content, 0)
    types = [model.Subgraphs(s).Tensors(t).Type() for s in range(model.SubgraphsLength())
             for t in range(model.Subgraphs(s).TensorsLength())]
    return float(np.mean([t == schema.TensorType.INT8 for t in types])) if types else 0.0


def saved_model_converter(function, root):
    """A converter from `function`, frozen as the LiteRT export freezes it, saved as a SavedModel with one
    signature (the StableHLO quantizer converts from a SavedModel only)."""
    import tensorflow as tf

    from tfcaption.export.litert import frozen_function

    frozen = frozen_function(function)
    module = tf.Module()
    module.function = frozen
    path = os.path.join(root, "savedmodel")
    tf.saved_model.save(module, path, signatures={"serving_default": frozen.get_concrete_function()})
    return tf.lite.TFLiteConverter.from_saved_model(path)


def child(spec):
    """One conversion attempt (run in its own process): writes the file, its operators and, for a
    pixels-to-tokens file, its best tokens on the test pixels."""
    import tensorflow as tf

    from tfcaption.export.litert import frozen_converter, operator_names
    from tfcaption.export.portable import INPUT_NAME
    from tfcaption.training.run_directory import load_run

    captioner, run_config = load_run(spec["model"])
    variant = VARIANTS[spec["variant"]]
    function = target_function(captioner, run_config, spec["target"])
    pixels = np.load(spec["pixels"])
    converter = (saved_model_converter(function, spec["root"]) if variant.get("saved_model") else
                 frozen_converter(function))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [getattr(tf.lite.OpsSet, name) for name in variant["ops"]]
    for name, value in variant.get("attrs", {}).items():
        setattr(converter, name, value)
    # A SavedModel's signature is fed by input name; a concrete function's by position.
    dataset = ([{INPUT_NAME: image[None]} for image in pixels["validation"]] if variant.get("saved_model") else
               [[image[None]] for image in pixels["validation"]])
    converter.representative_dataset = lambda: iter(dataset)
    print("converting", flush=True)
    content = converter.convert()
    result = {"size_bytes": len(content), "operators": operator_names(content),
              "int8_tensor_share": int8_tensor_share(content)}
    with open(os.path.join(spec["root"], "model.tflite"), "wb") as f:
        f.write(content)
    if spec["target"] != ENCODER and not spec["variant"].endswith("calibrate only"):
        from ai_edge_litert.interpreter import Interpreter

        try:
            runner = Interpreter(model_content=content).get_signature_runner()
            result["tokens"] = [np.asarray(runner(**{INPUT_NAME: image[None]})["tokens"])[0, 0].tolist()
                                for image in pixels["test"]]
        except RuntimeError as error:  # the file converted but the interpreter cannot run it
            result["run_error"] = str(error).replace("\n", " ")
    with open(os.path.join(spec["root"], "result.json"), "w") as f:
        json.dump(result, f)
    return 0


def died_in(stderr):
    """faulthandler's innermost Python frames ("file:line in function"), innermost first."""
    lines = stderr.splitlines()
    starts = [i for i, line in enumerate(lines) if "most recent call first" in line]
    if not starts:
        return []
    frames = []
    for line in lines[starts[-1] + 1:]:
        line = line.strip()
        if not line.startswith("File "):
            break
        # File "/path/to/module.py", line 152 in _feed_tensors
        path, _, rest = line[len('File "'):].partition('", line ')
        number, _, name = rest.partition(" in ")
        frames.append(f"{path.split('site-packages/')[-1]}:{number} in {name}")
    return frames[:STACK_FRAMES]


def native_frames(command, timeout):
    """The innermost native frames ("#0 function") of `command`'s crash, from gdb's backtrace; [] without gdb."""
    if not shutil.which("gdb"):
        return []
    try:
        done = subprocess.run(["gdb", "-batch", "-ex", "run", "-ex", f"bt {STACK_FRAMES}", "--args", *command],
                              capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    except subprocess.TimeoutExpired:
        return []
    # #0  0x00007fff... in tflite::optimize::calibration::MinMax::Update(float const*, ...) () from /path/lib.so
    return [f"{line.split()[0]} {line.split(' in ', 1)[1].split(' () ')[0]}" for line in done.stdout.splitlines()
            if line.startswith("#") and " in " in line][:STACK_FRAMES]


def attempt(model, target, variant, pixels, root, timeout, native=False):
    """Runs one attempt in a child process; its outcome: status, signal, stderr tail, faulthandler frames."""
    spec = {"model": model, "target": target, "variant": variant, "pixels": pixels, "root": root}
    os.makedirs(root, exist_ok=True)
    started = time.perf_counter()
    command = [sys.executable, "-X", "faulthandler", os.path.abspath(__file__), "--child", json.dumps(spec)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        code, stderr = done.returncode, done.stderr
    except subprocess.TimeoutExpired as expired:
        code, stderr = None, (expired.stderr or b"").decode(errors="replace") if isinstance(
            expired.stderr, bytes) else (expired.stderr or "")
    row = {"target": target, "variant": variant, "seconds": round(time.perf_counter() - started, 1),
           "exit_code": code, "signal": signal.Signals(-code).name if code is not None and code < 0 else None,
           "timed_out": code is None, "died_in": died_in(stderr),
           "stderr_tail": [line for line in stderr.splitlines()
                           if line.strip() and not line.startswith("Extension modules")][-12:]}
    result_path = os.path.join(root, "result.json")
    if code == 0 and os.path.isfile(result_path):
        with open(result_path) as f:
            row.update(json.load(f))
    row["outcome"] = ("converted, does not run" if row.get("run_error") else
                      "converted, no int8" if code == 0 and row.get("int8_tensor_share") == 0 else
                      "converted" if code == 0 else "timed out" if code is None else
                      f"killed by {row['signal']}" if row["signal"] else f"error (exit {code})")
    if native and row["signal"]:
        row["native_frames"] = native_frames(command, timeout)
    if code not in (0, None) and not row["signal"]:
        row["error"] = next((line for line in reversed(row["stderr_tail"]) if "Error" in line), None)
    return row


def float32_tokens(captioner, run_config, target, test_pixels):
    """The float32 LiteRT file's best tokens per test image (the reference the int8 files are compared with)."""
    from ai_edge_litert.interpreter import Interpreter

    from tfcaption.export.litert import convert
    from tfcaption.export.portable import INPUT_NAME

    runner = Interpreter(model_content=convert(target_function(captioner, run_config, target))).get_signature_runner()
    return [np.asarray(runner(**{INPUT_NAME: image[None]})["tokens"])[0, 0].tolist() for image in test_pixels]


def quality(rows, reference, examples, vocab, use_java):
    """Adds CIDEr-D of the float32 file and of each converted file, and the share of identical captions."""
    from tfcaption.metrics.report import evaluate_results

    def cider(tokens):
        results = [dict(e, caption=vocab.decode(t)) for e, t in zip(examples, tokens)]
        return evaluate_results(results, use_java=use_java)["model"]["cider_d"]

    float32_cider = cider(reference)
    for row in rows:
        tokens = row.pop("tokens", None)
        if tokens is not None:
            captions = [vocab.decode(t) for t in tokens]
            row["cider_d"], row["float32_cider_d"] = cider(tokens), float32_cider
            row["same_captions_as_float32"] = float(np.mean([a == vocab.decode(b) for a, b in
                                                             zip(captions, reference)]))


def table(rows):
    lines = [f"{'function':<13} {'variant':<32} {'outcome':<18} {'s':>6} {'int8':>5} {'same':>6} {'CIDEr-D':>8}  "
             "died in / error"]
    for r in rows:
        share = r.get("int8_tensor_share")
        where = r["died_in"][0] if r["died_in"] else r.get("error") or r.get("run_error") or ""
        lines.append(f"{r['target']:<13} {r['variant']:<32} {r['outcome']:<18} {r['seconds']:>6.0f} "
                     f"{'-' if share is None else format(share, '5.2f'):>5} "
                     f"{format(r['same_captions_as_float32'], '6.3f') if 'same_captions_as_float32' in r else '-':>6} "
                     f"{format(r['cider_d'], '8.1f') if 'cider_d' in r else '-':>8}  {where}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a run directory (tfcaption-train's output)")
    parser.add_argument("--data", default=None, help="dataset spec (default: the run's)")
    parser.add_argument("--images", type=int, default=100, help="validation images in the representative dataset")
    parser.add_argument("--test-images", type=int, default=100, help="test images a converted file captions")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), help="variants to try (default: all)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per attempt")
    parser.add_argument("--java", action="store_true", help="PTB tokenisation through java, as the run's report")
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(json.loads(args.child))
    if not os.path.isfile(os.path.join(args.model, "config.json")):
        parser.exit(2, f"--model {args.model}: not a run directory (no config.json).\n")
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.exit(2, f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}.\n")

    from portable import test_examples  # this folder
    from report import machine, write_report  # this folder

    from tfcaption.data.catalog import resolve_dataset
    from tfcaption.export.portable import image_pixels
    from tfcaption.training.run_directory import load_run

    captioner, run_config = load_run(args.model)
    data = run_config.data
    data_dir = resolve_dataset(args.data or data.spec, data.root or None, data.options if not args.data else {},
                               verbose=False)
    size = captioner.backbone.image_encoder.image_size
    validation = test_examples(data_dir, args.images, split="val")
    examples = test_examples(data_dir, args.test_images)
    beam = run_config.export.beam_size
    targets = ["greedy", f"beam {beam}"]
    rows = []
    with tempfile.TemporaryDirectory() as root:
        pixels = os.path.join(root, "pixels.npz")
        np.savez(pixels, validation=np.stack([image_pixels(e["image"], size) for e in validation]),
                 test=np.stack([image_pixels(e["image"], size) for e in examples]))
        plan = [(t, v) for t in targets for v in args.variants] + [(ENCODER, v) for v in ENCODER_VARIANTS
                                                                     if v in args.variants]
        for i, (target, variant) in enumerate(plan):
            # gdb reruns a function's first crash to name the native frame it died in.
            native = not any(r["target"] == target and r["signal"] for r in rows)
            rows.append(attempt(args.model, target, variant, pixels, os.path.join(root, str(i)), args.timeout,
                                native))
            print(f"{target} / {variant}: {rows[-1]['outcome']} ({rows[-1]['seconds']} s)", flush=True)
        test_pixels = np.load(pixels)["test"]
        for target in targets:
            converted = [r for r in rows if r["target"] == target and "tokens" in r]
            if converted:
                quality(converted, float32_tokens(captioner, run_config, target, test_pixels), examples,
                        captioner.preprocessor.vocabulary, args.java)
    print(table(rows))
    for r in rows:
        if r.get("native_frames"):
            print(f"{r['target']} / {r['variant']} died in: {' <- '.join(r['native_frames'][:3])}")
    write_report(args.output, {"machine": machine(), "run": os.path.abspath(args.model),
                               "representative_images": len(validation), "representative_split": "val",
                               "test_images": len(examples), "beam_size": beam, "attempts": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
