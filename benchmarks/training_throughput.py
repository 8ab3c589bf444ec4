"""Training and decoding throughput of a preset on this machine.

Prints a table and writes JSON (default benchmarks/results/training_throughput.json):
train captions/second (XLA, float32 and mixed_bfloat16; one (image, caption) pair per example, and
`--captions-per-image` k captions per image with each image encoded once) and images/second for greedy
and beam-3 decoding, on random images and tokens of the preset's shapes.

    python benchmarks/training_throughput.py --preset small --batch-size 64 --captions-per-image 1 5
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from backbone_cost import SPECIAL_IDS  # noqa: E402  (this folder)
from report import describe_cpu, write_report  # noqa: E402  (this folder)
from tfcaption.data.pipeline import decoder_inputs  # noqa: E402
from tfcaption.decoding.captioning import compiled_generator  # noqa: E402
from tfcaption.models import CaptionerBackbone, CaptionerConfig  # noqa: E402
from tfcaption.training.trainer import masked_cross_entropy  # noqa: E402


def time_calls(fn, repeats):
    fn()  # compile
    fn()
    started = time.perf_counter()
    for _ in range(repeats):
        result = fn()
    tf.nest.map_structure(lambda t: t.numpy(), result)
    return (time.perf_counter() - started) / repeats


def example_inputs(model, batch_size, regions=50):
    """Random inputs of the model's kind: pixels in [0, 255], or `regions` region rows."""
    shape = tuple(regions if d is None else d for d in model.image_encoder.example_shape)
    if model.input_key == "images":
        return tf.random.uniform((batch_size,) + shape, 0, 255)
    return tf.random.normal((batch_size,) + shape)


def xe_step(config, batch_size, caption_tokens, captions_per_image=1, regions=50):
    """An XLA-compiled XE step (Adam) on random inputs: `batch_size` captions, batch_size // k images x k
    captions; returns (step, model), `step()` returning the loss."""
    model = CaptionerBackbone.from_model_config(config)
    optimizer = keras.optimizers.Adam(1e-4, beta_2=0.98)
    optimizer.build(model.trainable_variables)
    k = captions_per_image
    images = example_inputs(model, batch_size // k, regions)
    shape = (batch_size, caption_tokens) if k == 1 else (batch_size // k, k, caption_tokens)
    tokens = tf.random.uniform(shape, 4, config.vocab_size, tf.int32)

    @tf.function(jit_compile=True)
    def step():
        with tf.GradientTape() as tape:
            logits = model({model.input_key: images, **decoder_inputs(tokens, SPECIAL_IDS.pad_id)}, training=True)
            total, count = masked_cross_entropy(tokens[..., 1:], logits, SPECIAL_IDS.pad_id)
            loss = total / count
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    return step, model


def train_rate(config, batch_size, caption_tokens, repeats, captions_per_image=1):
    """Captions per second of the XE step on `batch_size` captions (batch_size // k images x k captions)."""
    step, model = xe_step(config, batch_size, caption_tokens, captions_per_image)
    k = captions_per_image
    return (batch_size // k) * k / time_calls(step, repeats), model


def decode_rate(model, batch_size, beam_size, steps, repeats):
    images = example_inputs(model, batch_size)
    generator = compiled_generator(model, beam_size, steps, stop_early=False, special_ids=SPECIAL_IDS)
    return batch_size / time_calls(lambda: generator(images), repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--vocab-size", type=int, default=48)
    parser.add_argument("--caption-tokens", type=int, default=27)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--captions-per-image", type=int, nargs="+", default=[1, 5],
                        help="k values to time (1: pairs)")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results", "training_throughput.json"))
    args = parser.parse_args()
    rows = []
    for policy in ("float32", "mixed_bfloat16"):
        config = CaptionerConfig.from_preset(args.preset, vocab_size=args.vocab_size, dtype_policy=policy)
        row = {"preset": args.preset, "dtype_policy": policy, "batch_size": args.batch_size}
        for k in args.captions_per_image:
            row[f"train_captions_per_s_k{k}"], model = train_rate(config, args.batch_size, args.caption_tokens,
                                                                 args.repeats, k)
        row["greedy_images_per_s"] = decode_rate(model, args.batch_size, 1, args.caption_tokens - 1, args.repeats)
        row["beam3_images_per_s"] = decode_rate(model, args.batch_size, 3, args.caption_tokens - 1, args.repeats)
        rows.append(row)
    machine = describe_cpu()
    print(f"batch {args.batch_size} captions, {args.caption_tokens} tokens, XLA; {machine}")
    train_columns = "".join(f"{f'train capt/s k={k}':>17}" for k in args.captions_per_image)
    print(f"{'preset':8} {'policy':15}{train_columns} {'greedy img/s':>13} {'beam-3 img/s':>13}")
    for r in rows:
        rates = "".join(f"{r[f'train_captions_per_s_k{k}']:17.0f}" for k in args.captions_per_image)
        print(f"{r['preset']:8} {r['dtype_policy']:15}{rates} {r['greedy_images_per_s']:13.0f} "
              f"{r['beam3_images_per_s']:13.0f}")
    write_report(args.output, {"machine": machine, "cores": os.cpu_count(), "rows": rows})


if __name__ == "__main__":
    main()
