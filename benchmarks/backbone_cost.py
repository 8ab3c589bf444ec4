"""What the pretrained-backbone presets cost per training step on this machine, frozen and fine-tuned.

For each preset (random weights: nothing downloads) it times one XLA-compiled training step (forward,
backward, Adam) on random pixels and captions, with the backbone `frozen` and with `all` of it training,
and counts the backbone's forward FLOPs per image (ViT: its matmuls, counted from the sizes; CNNs: TF's
profiler over the convolutions), so the numbers carry over to other hardware. Prints a table and writes
JSON (default benchmarks/results/backbone_cost.json).

    python benchmarks/backbone_cost.py                      # cptr, vit_m2, spatial_attention, resnet50_m2
    python benchmarks/backbone_cost.py --presets vit_m2 --batch-size 8 --repeats 5
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from report import describe_cpu, write_report  # noqa: E402  (this folder)
from tfcaption.data.pipeline import decoder_inputs  # noqa: E402
from tfcaption.data.tokenizer import SPECIALS, SpecialIds, Vocabulary  # noqa: E402
from tfcaption.models import CaptionerBackbone, CaptionerConfig  # noqa: E402
from tfcaption.training.trainer import masked_cross_entropy  # noqa: E402

VOCAB, CAPTION_TOKENS = 10_000, 16
# Random tokens stand for a word vocabulary's captions: its special ids (the benchmarks here share them).
SPECIAL_IDS = SpecialIds.of(Vocabulary(SPECIALS))
# The presets with a pretrained backbone, and M2 on ResNet-50's 7 x 7 grid (the M2 seed article's).
CASES = {
    "cptr": ("cptr", {}),
    "vit_m2": ("vit_m2", {}),
    "spatial_attention": ("spatial_attention", {}),
    "resnet50_m2": ("vit_m2", {"type": "cnn", "backbone": "resnet50"}),
}


def model_config(case, train_backbone):
    preset, image_encoder = CASES[case]
    base = CaptionerConfig.from_preset(preset).image_encoder
    part = ({**base.__dict__, **image_encoder} if not image_encoder.get("type") else dict(image_encoder))
    part.update(weights="", train_backbone=train_backbone)
    return CaptionerConfig.from_preset(preset, vocab_size=VOCAB, image_encoder=part)


def vit_forward_flops(sizes, image_size):
    """2 x multiply-adds of one image through a ViT: patch embedding, then per block the q/k/v/out
    projections, the two attention products and the MLP (LayerNorm, softmax and GELU left out)."""
    p, d, mlp, layers = sizes["patch_size"], sizes["width"], sizes["mlp_dim"], sizes["num_layers"]
    n = 1 + (image_size // p) ** 2
    per_block = n * (4 * d * d + 2 * d * mlp) + 2 * n * n * d
    return 2 * ((n - 1) * p * p * 3 * d + layers * per_block)


def cnn_forward_flops(backbone, image_size):
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2_as_graph

    function = tf.function(lambda x: backbone(x, training=False))
    concrete = function.get_concrete_function(tf.TensorSpec((1, image_size, image_size, 3), tf.float32))
    frozen, _ = convert_variables_to_constants_v2_as_graph(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return tf.compat.v1.profiler.profile(graph=frozen.graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op",
                                         options=options).total_float_ops


def step_seconds(config, batch_size, repeats):
    model = CaptionerBackbone.from_model_config(config)
    optimizer = keras.optimizers.Adam(1e-5)
    optimizer.build(model.trainable_variables)
    size = config.image_encoder.image_size
    images = tf.random.uniform((batch_size, size, size, 3), 0, 255)
    tokens = tf.random.uniform((batch_size, CAPTION_TOKENS), 4, config.vocab_size, tf.int32)

    @tf.function(jit_compile=True)
    def step():
        with tf.GradientTape() as tape:
            logits = model({"images": images, **decoder_inputs(tokens, SPECIAL_IDS.pad_id)}, training=True)
            total, count = masked_cross_entropy(tokens[:, 1:], logits, SPECIAL_IDS.pad_id)
            loss = total / count
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    started = time.perf_counter()
    step().numpy()  # compiles
    compile_seconds = time.perf_counter() - started
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step().numpy()
        times.append(time.perf_counter() - started)
    return min(times), compile_seconds, model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per setting (the fastest is kept)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "backbone_cost.json"))
    args = parser.parse_args(argv)

    rows = []
    for case in args.presets:
        row = {"preset": case}
        for mode in ("frozen", "all"):
            config = model_config(case, mode)
            seconds, compile_seconds, model = step_seconds(config, args.batch_size, args.repeats)
            row[f"{mode}_step_s"] = seconds
            row[f"{mode}_compile_s"] = compile_seconds
            keras.backend.clear_session()
        part, encoder = config.image_encoder, model.image_encoder
        row["backbone"] = part.architecture if part.type == "vit" else part.backbone
        row["image_size"] = part.image_size
        row["grid"] = f"{encoder.token_grid.rows}x{encoder.token_grid.cols}"
        row["backbone_params_m"] = encoder.backbone.count_params() / 1e6
        row["total_params_m"] = model.count_params() / 1e6
        flops = (vit_forward_flops(part.sizes(), part.image_size) if part.type == "vit"
                 else cnn_forward_flops(encoder.backbone, part.image_size))
        row["backbone_gflop_per_image"] = flops / 1e9
        # Fine-tuning runs the backbone forward and backward (~3x its forward FLOPs).
        row["all_backbone_gflop_per_s"] = 3 * flops * args.batch_size / row["all_step_s"] / 1e9
        rows.append(row)
        del model

    machine = describe_cpu()
    header = (f"{'preset':<18} {'backbone':<9} {'px':>4} {'grid':>5} {'params M':>9} {'GFLOP/img':>9} "
              f"{'frozen s/step':>13} {'all s/step':>10} {'all img/s':>9} {'GFLOP/s':>8}")
    print(f"batch {args.batch_size}, {CAPTION_TOKENS}-token captions, vocabulary {VOCAB}, XLA, float32; {machine}")
    print(header)
    for r in rows:
        print(f"{r['preset']:<18} {r['backbone']:<9} {r['image_size']:>4} {r['grid']:>5} {r['total_params_m']:>9.1f} "
              f"{r['backbone_gflop_per_image']:>9.1f} {r['frozen_step_s']:>13.2f} {r['all_step_s']:>10.2f} "
              f"{args.batch_size / r['all_step_s']:>9.2f} {r['all_backbone_gflop_per_s']:>8.0f}")
    write_report(args.out, {"batch_size": args.batch_size, "caption_tokens": CAPTION_TOKENS, "vocab_size": VOCAB,
                            "machine": machine, "rows": rows})


if __name__ == "__main__":
    main()
