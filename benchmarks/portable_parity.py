"""LiteRT float32 and ONNX captions checked against the SavedModel's, image by image, on runs' test splits.

For each run and each decoding (greedy, and beam search with the run's export beam size):
- the SavedModel (`export_run`, as `tfcaption-export` writes it) captions every test image in a separate
  TensorFlow-only process, one image per call of `serving_default`, as TF Serving runs it: encoded bytes
  in, `tokens` and `beam_scores` out;
- the LiteRT float32 and ONNX files (`export_run_litert` / `export_run_onnx`) caption the same images,
  decoded and resized as `tfcaption-caption --model FILE` does it;
- every image whose best tokens differ from the SavedModel's is listed with the reason: a near tie when
  the two best beams' scores (the SavedModel's or the file's) are within --tie, or for greedy search when
  the two tokens chosen where the captions part have log-probabilities within --tie (teacher-forced by the
  run's model on the common prefix); anything else is a mismatch;
- the LiteRT files' operators are listed (no Flex / SELECT_TF or custom op may appear).

    python benchmarks/portable_parity.py --model runs/shapes-small runs/shapes-cptr_small [--images 1000]

Prints a table and writes benchmarks/results/portable_parity.json; exits 1 when a difference is not a near
tie or a LiteRT file holds a non-built-in operator.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # this folder's helpers

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from portable import test_examples  # noqa: E402  (this folder)
from report import machine, write_report  # noqa: E402  (this folder)

DEFAULT_OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "portable_parity.json")
FILES = ("LiteRT float32", "ONNX")

# Runs in a fresh interpreter that imports TensorFlow only, as TF Serving would load the export.
SAVED_MODEL_CHILD = """
import json, sys
import tensorflow as tf
export, listing, output = sys.argv[1:4]
serve = tf.saved_model.load(export).signatures["serving_default"]
rows = []
for path in open(listing).read().split():
    with open(path, "rb") as f:
        out = serve(image_bytes=tf.constant([f.read()]))
    rows.append({"tokens": out["tokens"].numpy()[0].tolist(), "scores": out["beam_scores"].numpy()[0].tolist(),
                 "caption": out["caption"].numpy()[0].decode()})
json.dump(rows, open(output, "w"))
"""


def caption_ids(tokens, vocab):
    """A caption's token ids: up to its first <eos>, without <bos> or <pad>."""
    ids = []
    for token in np.asarray(tokens).tolist():
        if token == vocab.eos_id:
            break
        if token not in (vocab.bos_id, vocab.pad_id):
            ids.append(int(token))
    return ids


def saved_model_rows(export, examples, root):
    """The SavedModel's {tokens, scores, caption} per example, from a TensorFlow-only child process."""
    paths = []
    for i, example in enumerate(examples):
        paths.append(os.path.join(root, f"image-{i:05d}"))
        with open(paths[-1], "wb") as f:
            f.write(example["image"])
    listing, output = os.path.join(root, "images.txt"), os.path.join(root, "saved_model.json")
    with open(listing, "w") as f:
        f.write("\n".join(paths))
    subprocess.run([sys.executable, "-c", SAVED_MODEL_CHILD, export, listing, output], check=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    with open(output) as f:
        return json.load(f)


def parting_gap(captioner, pixels, expected, got):
    """Greedy search: |log p(a) - log p(b)| for the tokens a, b where two captions part, teacher-forced on
    their common prefix."""
    vocab = captioner.preprocessor.vocabulary
    step = next(i for i, (a, b) in enumerate(zip(expected + [vocab.eos_id], got + [vocab.eos_id])) if a != b)
    a = (expected + [vocab.eos_id])[step]
    b = (got + [vocab.eos_id])[step]
    tokens = tf.constant([[vocab.bos_id] + expected[:step]], tf.int32)
    key = captioner.backbone.input_key
    logits = captioner({key: tf.cast(pixels, tf.float32), "tokens": tokens}, training=False)[0, -1]
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32)).numpy()
    return step, float(abs(log_probs[a] - log_probs[b]))


def difference(captioner, pixels, reference, row, beam_size, tie):
    """How a file's caption differs from the SavedModel's: {"kind": "near tie" | "mismatch", ...}."""
    vocab = captioner.preprocessor.vocabulary
    expected, got = caption_ids(reference["tokens"], vocab), caption_ids(row["tokens"][0], vocab)
    found = {"saved_model": vocab.decode(expected), "file": vocab.decode(got)}
    if beam_size > 1:
        gaps = [float(scores[0] - scores[1]) for scores in (reference["scores"], row["scores"])]
        return dict(found, kind="near tie" if min(gaps) <= tie else "mismatch", score_gaps=gaps)
    step, gap = parting_gap(captioner, pixels, expected, got)
    return dict(found, kind="near tie" if gap <= tie else "mismatch", parting_step=step, log_prob_gap=gap)


def check_run(path, images, tie):
    """One run's rows: {decoding: {file format: counts and differences}} and the LiteRT operators."""
    from tfcaption.data.catalog import resolve_dataset
    from tfcaption.export.litert import export_run_litert, operator_names
    from tfcaption.export.onnx import export_run_onnx
    from tfcaption.export.portable import image_pixels
    from tfcaption.export.portable_runtime import PortableBackend
    from tfcaption.export.saved_model import export_run
    from tfcaption.training.run_directory import load_run

    captioner, run_config = load_run(path)
    vocab = captioner.preprocessor.vocabulary
    data = run_config.data
    examples = test_examples(resolve_dataset(data.spec, data.root or None, data.options, verbose=False), images)
    size = captioner.backbone.image_encoder.image_size
    beam = run_config.export.beam_size
    result = {"run": os.path.abspath(path), "export_name": run_config.export_name, "images": len(examples),
              "decodings": {}, "litert_operators": {}}
    with tempfile.TemporaryDirectory() as root:
        for decoding, beam_size in {"greedy": 1, f"beam {beam}": beam}.items():
            export = export_run(captioner, run_config, os.path.join(root, "savedmodel"), f"k{beam_size}",
                                beam_size=beam_size)
            reference = saved_model_rows(export, examples, tempfile.mkdtemp(dir=root))
            files = {"LiteRT float32": export_run_litert(captioner, run_config, os.path.join(root, f"litert{beam_size}"),
                                                         beam_size=beam_size),
                     "ONNX": export_run_onnx(captioner, run_config, os.path.join(root, f"onnx{beam_size}"),
                                             beam_size=beam_size)}
            with open(files["LiteRT float32"], "rb") as f:
                result["litert_operators"][decoding] = operator_names(f.read())
            rows = {}
            for name, file in files.items():
                backend = PortableBackend(file)
                same, differences = 0, []
                for i, example in enumerate(examples):
                    row = backend.tokens(example["image"])
                    row = {"tokens": row["tokens"].tolist(), "scores": row["scores"].tolist()}
                    if caption_ids(row["tokens"][0], vocab) == caption_ids(reference[i]["tokens"], vocab):
                        same += 1
                        continue
                    pixels = image_pixels(example["image"], size, backend.resample)[None]
                    differences.append(dict(difference(captioner, pixels, reference[i], row, beam_size, tie),
                                            image_id=example["image_id"]))
                rows[name] = {"identical": same, "near_ties": sum(d["kind"] == "near tie" for d in differences),
                              "mismatches": sum(d["kind"] == "mismatch" for d in differences),
                              "differences": differences}
            result["decodings"][decoding] = rows
    return result


def table(results):
    lines = [f"{'run':<24} {'decoding':<8} {'format':<15} {'images':>6} {'identical':>9} {'near ties':>9} "
             f"{'mismatches':>10}"]
    for result in results:
        for decoding, rows in result["decodings"].items():
            for name, row in rows.items():
                lines.append(f"{os.path.basename(result['run']):<24} {decoding:<8} {name:<15} {result['images']:>6} "
                             f"{row['identical']:>9} {row['near_ties']:>9} {row['mismatches']:>10}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", required=True, help="run directories (tfcaption-train's output)")
    parser.add_argument("--images", type=int, default=1000, help="test images per run")
    parser.add_argument("--tie", type=float, default=1e-4, help="score gap within which two beams are a near tie")
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    for path in args.model:
        if not os.path.isfile(os.path.join(path, "config.json")):
            parser.exit(2, f"--model {path}: not a run directory (no config.json).\n")

    results = [check_run(path, args.images, args.tie) for path in args.model]
    print(table(results))
    failed = False
    for result in results:
        for decoding, rows in result["decodings"].items():
            for name, row in rows.items():
                for d in row["differences"]:
                    print(f"{os.path.basename(result['run'])} {decoding} {name} {d['image_id']}: {d['kind']}: "
                          f"SavedModel {d['saved_model']!r}, file {d['file']!r} "
                          f"({', '.join(f'{k} {v}' for k, v in d.items() if k.endswith(('gaps', 'gap', 'step')))})")
                failed |= row["mismatches"] > 0
        for decoding, names in result["litert_operators"].items():
            custom = [n for n in names if n.startswith("Flex") or not n.isupper()]
            print(f"{os.path.basename(result['run'])} {decoding} LiteRT operators: {', '.join(names)}"
                  + (f"  NOT BUILT-IN: {', '.join(custom)}" if custom else ""))
            failed |= bool(custom)
    write_report(args.output, {"machine": machine(), "tie": args.tie, "runs": results})
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
