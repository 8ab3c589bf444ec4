"""BLIP-base captioning latency: tfcaption (XLA) beside transformers' generate() on the same CPU, in one run.

A BLIP checkpoint with Salesforce/blip-image-captioning-base's sizes (ViT-B/16 at 384 px: 577 image tokens;
a 12-layer BERT-base decoder with cross-attention in every layer; vocabulary 30,524) and random weights is
written in the Hub's layout into a temporary directory: tfcaption builds its vision tower and text decoder
with seeded random weights and writes them under the checkpoint's names (`blip_checkpoint_tensors`) in a
model.safetensors, with config.json, a BERT-shaped vocab.txt ([PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102,
[MASK] 103, then [DEC] and [ENC] added) and the image processor's settings. Nothing downloads, and the cost
does not depend on the values. Both sides read that one directory:

- tfcaption imports it (`blip_captioner`, as `tfcaption-import` and `from_preset("hf://...")` do) and runs
  `compiled_generator` (the encoder and the whole decoding loop in one XLA function) with
  `GenerateBeamSampler` (transformers' beam search) and, with `--greedy`, `GreedySampler`;
- transformers loads it with `BlipForConditionalGeneration.from_pretrained` and runs
  `generate(pixel_values, num_beams=k, max_new_tokens=n, min_new_tokens=n, do_sample=False)`, under a
  Python that has torch and transformers (`--reference-python`; never a tfcaption dependency):

    python3 -m venv ~/blipenv && ~/blipenv/bin/pip install torch numpy safetensors "transformers>=5,<6"
    python benchmarks/blip_latency.py --reference-python ~/blipenv/bin/python

Every caption is exactly `--new-tokens` tokens on both sides: random weights may emit [SEP] at any step, so
the end token is banned until then (tfcaption's `min_length` = n + 1, the row counting [DEC], which is
transformers' `min_new_tokens` = n), and each side checks that its output has n tokens and no [SEP].

Inputs are images already at 384 x 384 (resizing and the host-side image processor excluded on both sides):
tfcaption takes [0, 255] pixels and rescales and normalises them inside its graph (one elementwise op),
transformers takes the normalised `pixel_values`. Each side runs in its own child process of this one with
the same threads (`--threads`, default 2: TensorFlow's intra-op pool, torch.set_num_threads); children
alternate over `--rounds` (tfcaption first in odd rounds, transformers first in even ones), each child
warming every configuration up twice (compilation, allocators) and then timing it `--repeats` times; a row's
seconds are the median of its calls over all rounds.

FLOPs per image (2 x multiply-adds, counted from the sizes; the same count for both sides):
  vision tower  2 (576 * 16 * 16 * 3 * d + L * (577 (4 d^2 + 2 d d_mlp) + 2 * 577^2 d))
                (backbone_cost.vit_forward_flops)
  decoder       cross-attention keys and values once per image, then k beams x n steps of one cached token
                each (self-attention over the filled prefix, cross-attention query and output and the
                attention over 577 tokens, the MLP, the LM head's transform d^2 and its d x V projection)
                (flop_counts.beam_search_flops, plus the transform)
"% peak" is GFLOP/s over a float32 2048 x 2048 matmul under XLA measured in this process with the same
threads (decode_cost.matmul_peak_gflops); torch's own matmul rate is printed beside it. transformers does
more work than the count: it projects the image's keys and values once per beam (k times per image).

Prints a table and writes JSON (default benchmarks/results/blip_latency.json). `--quick` runs tiny sizes
(seconds; the smoke test runs it without the reference).
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Salesforce/blip-image-captioning-base's config.json sizes (transformers' BlipConfig defaults but for the
# text decoder's 12 heads).
BASE = dict(vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                        image_size=384, patch_size=16, layer_norm_eps=1e-5, hidden_act="gelu"),
            text=dict(vocab_size=30524, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                      num_attention_heads=12, max_position_embeddings=512, layer_norm_eps=1e-12, hidden_act="gelu"))
QUICK = dict(vision=dict(BASE["vision"], hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, image_size=64),
             text=dict(BASE["text"], vocab_size=130, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, max_position_embeddings=32))
# BERT's special ids; BLIP adds [DEC] (its start token) and [ENC] after the base vocabulary.
BERT_SPECIALS = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
PAD_ID, SEP_ID = 0, 102
ISSUE_TARGETS = {"batch 1": 1.5, "batch 8": 1.0}  # tfcaption / transformers images/s, issue 30
SEED = 0


def reference_helpers():
    """benchmarks/compare_reference.py, whose child runner, checks and one-line errors this script shares."""
    sys.path[:0] = [p for p in (HERE, ROOT) if p not in sys.path]
    import compare_reference

    return compare_reference


# ----- the checkpoint -----

def write_checkpoint(directory, sizes, seed=SEED):
    """A `BlipForConditionalGeneration` checkpoint of `sizes` with seeded random weights, in the Hub's layout."""
    import keras
    import safetensors.numpy

    from tfcaption.interop.hf.blip_weights import (bert_text_decoder_arguments, blip_checkpoint_tensors,
                                                   blip_vision_arguments)
    from tfcaption.layers.bert_text_decoder import BertTextDecoder
    from tfcaption.layers.blip_vision_tower import BlipVisionTower

    vocab_size = sizes["text"]["vocab_size"]
    words = [BERT_SPECIALS.get(i, f"[unused{i}]" if i < 100 else f"w{i}") for i in range(vocab_size - 2)]
    bos_id = vocab_size - 2
    config = {"architectures": ["BlipForConditionalGeneration"], "model_type": "blip", "projection_dim": 512,
              "image_text_hidden_size": 256, "tie_word_embeddings": True,
              "vision_config": dict(sizes["vision"], model_type="blip_vision_model"),
              "text_config": dict(sizes["text"], model_type="blip_text_model", is_decoder=True,
                                  encoder_hidden_size=sizes["vision"]["hidden_size"], bos_token_id=bos_id,
                                  pad_token_id=PAD_ID, sep_token_id=SEP_ID, eos_token_id=2,
                                  tie_word_embeddings=True)}
    keras.utils.set_random_seed(seed)
    tower = BlipVisionTower(**blip_vision_arguments(config))
    decoder = BertTextDecoder(**bert_text_decoder_arguments(config))
    tower.build()
    decoder.build()
    safetensors.numpy.save_file(blip_checkpoint_tensors(tower, decoder),
                                os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    specials = {"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"], "cls_token": "[CLS]",
                "mask_token": "[MASK]", "pad_token": "[PAD]", "sep_token": "[SEP]", "unk_token": "[UNK]"}
    size = sizes["vision"]["image_size"]
    files = {
        "config.json": config,
        "special_tokens_map.json": specials,
        "tokenizer_config.json": {
            "tokenizer_class": "BertTokenizer", "do_lower_case": True, **specials,
            "added_tokens_decoder": {str(bos_id): {"content": "[DEC]", "special": True},
                                     str(bos_id + 1): {"content": "[ENC]", "special": True}}},
        "preprocessor_config.json": {
            "image_processor_type": "BlipImageProcessor", "do_resize": True, "size": {"height": size, "width": size},
            "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
            "do_convert_rgb": True},
    }
    for name, values in files.items():
        with open(os.path.join(directory, name), "w") as f:
            json.dump(values, f, indent=2)
    with open(os.path.join(directory, "vocab.txt"), "w") as f:
        f.write("\n".join(words) + "\n")
    return config


def flops_per_image(sizes, beams, steps):
    """(vision tower, decoder) FLOPs of one image: the module docstring's formula."""
    from backbone_cost import vit_forward_flops
    from flop_counts import Sizes, beam_search_flops

    vision, text = sizes["vision"], sizes["text"]
    tokens = 1 + (vision["image_size"] // vision["patch_size"]) ** 2
    vit = vit_forward_flops(dict(patch_size=vision["patch_size"], width=vision["hidden_size"],
                                 mlp_dim=vision["intermediate_size"], num_layers=vision["num_hidden_layers"]),
                            vision["image_size"])
    d = text["hidden_size"]
    s = Sizes(hidden_dim=d, intermediate_dim=text["intermediate_size"], vocab_size=text["vocab_size"],
              encoder_layers=0, decoder_layers=text["num_hidden_layers"], memory_slots=0, regions=tokens,
              meshed=False)
    head_transform = beams * steps * 2 * d * d
    return vit, beam_search_flops(s, 1, beams, steps, include_encoder=False) + head_transform


# ----- the children: each times every configuration of one side and prints "RESULT {json}" -----

def _timings(call, check, repeats, warmups=2):
    """Seconds of each of `repeats` calls after `warmups`; `check` sees the first call's output."""
    started = time.perf_counter()
    check(call())
    first = time.perf_counter() - started
    for _ in range(warmups - 1):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return {"seconds": times, "first_call_seconds": first}


def _check_tokens(tokens, steps, where):
    import numpy as np

    tokens = np.asarray(tokens)
    if tokens.shape[-1] != steps or (tokens == SEP_ID).any():
        raise RuntimeError(f"{where}: expected {steps} generated tokens without [SEP], got shape {tokens.shape}")


def tfcaption_child(directory, cases, steps, repeats, threads):
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from tfcaption.decoding.captioning import compiled_generator
    from tfcaption.interop.hf.import_blip import blip_captioner
    from tfcaption.samplers import GenerateBeamSampler, GreedySampler

    started = time.perf_counter()
    captioner = blip_captioner(directory)
    import_seconds = time.perf_counter() - started
    model, size = captioner.backbone, captioner.backbone.config.image_encoder.image_size
    results = {}
    for search, batch in cases:
        beams = int(search[len("beam"):]) if search.startswith("beam") else 1
        sampler = (GenerateBeamSampler(num_beams=beams, min_length=steps + 1) if beams > 1 else
                   GreedySampler(min_length=steps + 1))
        generate = compiled_generator(model, sampler, steps, special_ids=captioner.preprocessor)
        images = tf.constant(np.random.RandomState(batch).uniform(0, 255, (batch, size, size, 3)).astype("float32"))
        results[f"{search}/{batch}"] = _timings(lambda: generate(images)["tokens"].numpy(),
                                                lambda t: _check_tokens(t, steps, f"tfcaption {search} batch {batch}"),
                                                repeats)
    return {"results": results, "import_seconds": import_seconds, "tensorflow_version": tf.__version__,
            "threads": threads}


def reference_child(directory, cases, steps, repeats, threads):
    import torch
    import transformers
    from transformers import BlipForConditionalGeneration

    torch.set_num_threads(threads)
    transformers.logging.set_verbosity_error()  # the tied LM-head decoder is absent from the file, as in the Hub's
    model = BlipForConditionalGeneration.from_pretrained(directory, dtype=torch.float32).eval()
    size = model.config.vision_config.image_size
    results = {}
    for search, batch in cases:
        beams = int(search[len("beam"):]) if search.startswith("beam") else 1
        pixel_values = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))

        def call():
            with torch.inference_mode():
                return model.generate(pixel_values=pixel_values, num_beams=beams, max_new_tokens=steps,
                                      min_new_tokens=steps, do_sample=False)

        # generate() returns [DEC] followed by the new tokens
        results[f"{search}/{batch}"] = _timings(
            call, lambda out: _check_tokens(out[:, 1:].numpy(), steps, f"transformers {search} batch {batch}"),
            repeats)
    a = torch.randn(2048, 2048)
    matmul = []
    for _ in range(5):
        started = time.perf_counter()
        torch.matmul(a, a)
        matmul.append(time.perf_counter() - started)
    return {"results": results, "torch_version": torch.__version__, "transformers_version": transformers.__version__,
            "threads": torch.get_num_threads(), "torch_matmul_gflop_per_s": 2 * 2048 ** 3 / min(matmul) / 1e9}


# ----- the parent -----

def check_options(args):
    helpers = reference_helpers()
    sizes = QUICK if args.quick else BASE
    for name, values in (("--batch-sizes", args.batch_sizes), ("--beam-size", [args.beam_size]),
                         ("--new-tokens", [args.new_tokens]), ("--repeats", [args.repeats]),
                         ("--rounds", [args.rounds]), ("--threads", [args.threads])):
        if any(v < 1 for v in values):
            raise helpers.UsageError(f"{name} {' '.join(map(str, values))}: must be at least 1")
    if args.beam_size < 2:
        raise helpers.UsageError(f"--beam-size {args.beam_size}: beam search needs at least 2 beams "
                                 "(--greedy adds one-beam rows)")
    positions = sizes["text"]["max_position_embeddings"]
    if args.new_tokens + 1 > positions:
        raise helpers.UsageError(f"--new-tokens {args.new_tokens}: [DEC] and the new tokens must fit the decoder's "
                                 f"{positions} positions")
    if args.reference_python:
        helpers.check_reference_python(args.reference_python, ("torch", "transformers", "numpy"))
    return sizes


def run(args):
    helpers = reference_helpers()
    sizes = check_options(args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from report import describe_cpu
    from decode_cost import matmul_peak_gflops

    searches = [f"beam{args.beam_size}"] + (["greedy"] if args.greedy else [])
    cases = [(search, batch) for search in searches for batch in args.batch_sizes]
    sides = ["tfcaption"] + (["transformers"] if args.reference_python else [])
    runs = {side: [] for side in sides}
    with tempfile.TemporaryDirectory(prefix="blip_latency_") as directory:
        started = time.perf_counter()
        write_checkpoint(directory, sizes)
        write_seconds = time.perf_counter() - started
        peak = matmul_peak_gflops()
        for round_ in range(args.rounds):
            for side in (sides if round_ % 2 == 0 else sides[::-1]):
                python = sys.executable if side == "tfcaption" else args.reference_python
                command = [python, os.path.abspath(__file__), "--child", side, "--checkpoint", directory,
                           "--cases", json.dumps(cases), "--new-tokens", str(args.new_tokens),
                           "--repeats", str(args.repeats), "--threads", str(args.threads)]
                env = helpers.checkout_env(ROOT) if side == "tfcaption" else None
                runs[side].append(helpers.child_result(command, f"{side} child (round {round_ + 1})", env=env))
    rows = []
    for search, batch in cases:
        beams = int(search[len("beam"):]) if search.startswith("beam") else 1
        vision, decoder = flops_per_image(sizes, beams, args.new_tokens)
        medians = {}
        for side in sides:
            calls = [s for r in runs[side] for s in r["results"][f"{search}/{batch}"]["seconds"]]
            medians[side] = statistics.median(calls)
            per_image = medians[side] / batch
            rows.append({"implementation": "tfcaption (XLA)" if side == "tfcaption" else "transformers",
                         "search": search, "beams": beams, "batch": batch, "seconds_per_call": medians[side],
                         "calls": len(calls), "spread": [min(calls), max(calls)], "ms_per_image": 1000 * per_image,
                         "images_per_s": 1 / per_image, "gflop_per_image": (vision + decoder) / 1e9,
                         "vision_gflop_per_image": vision / 1e9, "decoder_gflop_per_image": decoder / 1e9,
                         "gflop_per_s": (vision + decoder) / per_image / 1e9,
                         "percent_of_matmul_peak": 100 * (vision + decoder) / per_image / 1e9 / peak,
                         "tfcaption_speedup": None})
        if "transformers" in medians:
            for row in rows[-len(sides):]:
                row["tfcaption_speedup"] = medians["transformers"] / medians["tfcaption"]
    versions = {k: v for side in sides for k, v in runs[side][0].items() if k.endswith("_version")}
    torch_peak = runs["transformers"][0]["torch_matmul_gflop_per_s"] if "transformers" in runs else None
    targets = {}
    for label, limit in ISSUE_TARGETS.items():
        batch = int(label.split()[1])
        speedup = next((r["tfcaption_speedup"] for r in rows if r["batch"] == batch and r["search"] == searches[0]
                        and r["tfcaption_speedup"] is not None), None)
        if speedup is not None:
            targets[f"{searches[0]} {label}"] = {"speedup": speedup, "at_least": limit, "met": speedup >= limit}
    return {"machine": describe_cpu(), "cores": os.cpu_count(), "threads": args.threads,
            "sizes": "quick (tiny)" if args.quick else "BLIP base (Salesforce/blip-image-captioning-base's config)",
            "config": sizes, "new_tokens": args.new_tokens, "rounds": args.rounds, "repeats": args.repeats,
            "order": "tfcaption first in odd rounds, transformers first in even rounds",
            "inputs": "images at the input size; resizing and the host image processor excluded on both sides",
            "xla_matmul_gflop_per_s": peak, "torch_matmul_gflop_per_s": torch_peak, "versions": versions,
            "checkpoint_write_seconds": write_seconds,
            "tfcaption_import_seconds": [r["import_seconds"] for r in runs["tfcaption"]],
            "first_call_seconds": {side: {case: [r["results"][case]["first_call_seconds"] for r in runs[side]]
                                          for case in runs[side][0]["results"]} for side in sides},
            "reference": args.reference_python or None, "issue_targets": targets, "rows": rows}


def print_table(report):
    torch_rate = (f", torch {report['torch_matmul_gflop_per_s']:.0f} GFLOP/s"
                  if report["torch_matmul_gflop_per_s"] else "")
    print(f"Machine: {report['machine']}; {report['threads']} threads per side; float32 2048x2048 matmul: "
          f"XLA {report['xla_matmul_gflop_per_s']:.0f} GFLOP/s{torch_rate}; {report['versions']}")
    print(f"{report['sizes']}; {report['new_tokens']} new tokens per caption; median of {report['repeats']} calls x "
          f"{report['rounds']} round(s); {report['inputs']}")
    print(f"{'implementation':<16} {'search':<7} {'batch':>5} {'s/call':>8} {'ms/img':>8} {'img/s':>7} "
          f"{'GFLOP/img':>9} {'GFLOP/s':>8} {'% peak':>6} {'tfc/hf':>7}")
    for r in report["rows"]:
        speedup = "-" if r["tfcaption_speedup"] is None else f"{r['tfcaption_speedup']:.2f}x"
        print(f"{r['implementation']:<16} {r['search']:<7} {r['batch']:>5} {r['seconds_per_call']:>8.3f} "
              f"{r['ms_per_image']:>8.1f} {r['images_per_s']:>7.2f} {r['gflop_per_image']:>9.1f} "
              f"{r['gflop_per_s']:>8.1f} {r['percent_of_matmul_peak']:>6.1f} {speedup:>7}")
    if not report["reference"]:
        print("transformers: skipped (no --reference-python); \"tfc/hf\" is empty")
    for name, target in report["issue_targets"].items():
        print(f"issue 30 target, {name}: tfcaption {target['speedup']:.2f}x transformers' images/s "
              f"(at least {target['at_least']:.1f}x): {'met' if target['met'] else 'NOT met'}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference-python", default="",
                        help='a Python with torch and transformers >= 5 ("": time tfcaption alone)')
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=20, help="tokens generated per caption, exactly")
    parser.add_argument("--greedy", action="store_true", help="also time greedy search (one beam)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per configuration and child "
                                                                   "(default 3; --quick 1)")
    parser.add_argument("--rounds", type=int, default=None, help="children per side, the order alternating "
                                                                  "(default 2; --quick 1)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of each side (default 2)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "blip_latency.json"))
    parser.add_argument("--child", choices=["tfcaption", "transformers"], help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--cases", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child = tfcaption_child if args.child == "tfcaption" else reference_child
        result = child(args.checkpoint, [tuple(c) for c in json.loads(args.cases)], args.new_tokens, args.repeats,
                       args.threads)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    args.repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    args.rounds = args.rounds if args.rounds is not None else (1 if args.quick else 2)
    try:
        report = run(args)
    except reference_helpers().UsageError as error:
        print(f"blip_latency.py: {error}", file=sys.stderr)
        return 2
    print_table(report)
    from report import write_report

    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
