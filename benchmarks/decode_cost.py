"""Beam search against its FLOP count on this machine: how close decoding runs to the CPU's matmul peak.

For each preset, `tfcaption.samplers.BeamSampler` through `tfcaption.decoding.decode` (XLA, the fixed number of steps: `stop_early=False`) on
random encoder outputs of a batch of images, timed as the fastest of `--repeats` runs, beside the FLOPs that
decode needs (benchmarks/flop_counts.py: cross-attention keys and values once per image, one cached token per
step and beam). The peak is a float32 2048 x 2048 matmul under XLA measured in the same run. Random
weights: nothing downloads. Prints a table and writes JSON (default benchmarks/results/decode_cost.json).

    python benchmarks/decode_cost.py                              # m2_regions (the paper config) and small
    python benchmarks/decode_cost.py --presets small --beam-size 3 --images 32
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from backbone_cost import SPECIAL_IDS  # noqa: E402  (this folder)
from flop_counts import Sizes, beam_search_flops  # noqa: E402  (this folder)
from report import describe_cpu, write_report  # noqa: E402  (this folder)
from tfcaption.decoding import decode  # noqa: E402
from tfcaption.samplers import BeamSampler  # noqa: E402
from tfcaption.models import CaptionerBackbone, CaptionerConfig  # noqa: E402

VOCAB = {"m2_regions": 10_201, "small": 49}  # M2's COCO vocabulary; shapes'


def matmul_peak_gflops(size=2048, repeats=5):
    a = tf.random.normal((size, size))
    matmul = tf.function(lambda x: tf.matmul(x, x), jit_compile=True)
    matmul(a).numpy()
    best = min(_seconds(lambda: matmul(a).numpy()) for _ in range(repeats))
    return 2 * size ** 3 / best / 1e9


def _seconds(fn):
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(VOCAB), choices=list(VOCAB))
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="timed decodes per preset (the fastest is kept)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "decode_cost.json"))
    args = parser.parse_args(argv)

    peak = matmul_peak_gflops()
    rows = []
    for preset in args.presets:
        config = CaptionerConfig.from_preset(preset, vocab_size=VOCAB[preset], dtype_policy="float32")
        model = CaptionerBackbone.from_model_config(config)
        rng = np.random.default_rng(0)
        if config.image_encoder.type == "regions":
            regions = 50
            inputs = tf.constant(rng.standard_normal((args.images, regions, config.image_encoder.feature_dim)),
                                 tf.float32)
        else:
            size = config.image_encoder.image_size
            inputs = tf.constant(rng.uniform(0, 255, (args.images, size, size, 3)), tf.float32)
        encode = tf.function(lambda x: model.encode(x, training=False), jit_compile=True)
        encoder_outputs, encoder_mask = encode(inputs)
        regions = int(encoder_outputs.shape[2])
        sampler = BeamSampler(num_beams=args.beam_size, stop_early=False)
        search = tf.function(lambda outputs, mask: decode(model, outputs, mask, sampler, args.steps,
                                                          special_ids=SPECIAL_IDS)["tokens"], jit_compile=True)
        compile_seconds = _seconds(lambda: search(encoder_outputs, encoder_mask).numpy())
        seconds = min(_seconds(lambda: search(encoder_outputs, encoder_mask).numpy()) for _ in range(args.repeats))
        encode_seconds = min(_seconds(lambda: encode(inputs)[0].numpy()) for _ in range(args.repeats))
        flops = beam_search_flops(Sizes.of_config(config, regions), args.images, args.beam_size, args.steps,
                                  include_encoder=False)
        rows.append({"preset": preset, "decoder": config.decoder.type, "images": args.images,
                     "beam_size": args.beam_size, "steps": args.steps, "regions": regions,
                     "gflop": flops / 1e9, "seconds": seconds, "gflop_per_s": flops / seconds / 1e9,
                     "percent_of_peak": 100 * flops / seconds / 1e9 / peak, "images_per_s": args.images / seconds,
                     "encode_seconds": encode_seconds, "compile_seconds": compile_seconds})

    machine = describe_cpu()
    print(f"Machine: {machine}; float32 2048x2048 matmul peak (XLA): {peak:.0f} GFLOP/s")
    print(f"{'preset':<11} {'decoder':<11} {'images':>6} {'k':>2} {'steps':>5} {'GFLOP':>7} {'beam s':>7} "
          f"{'GFLOP/s':>8} {'% peak':>6} {'img/s':>7} {'encode s':>8}")
    for r in rows:
        print(f"{r['preset']:<11} {r['decoder']:<11} {r['images']:>6} {r['beam_size']:>2} {r['steps']:>5} "
              f"{r['gflop']:>7.2f} {r['seconds']:>7.3f} {r['gflop_per_s']:>8.1f} {r['percent_of_peak']:>6.1f} "
              f"{r['images_per_s']:>7.1f} {r['encode_seconds']:>8.3f}")
    write_report(args.out, {"machine": machine, "matmul_peak_gflop_per_s": peak, "rows": rows})


if __name__ == "__main__":
    main()
