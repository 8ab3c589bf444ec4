"""SCST against XE per training step on this machine, for the `small` and `m2` presets.

One XE step (teacher forcing, backward, Adam; XLA) on a batch of captions against one SCST step
(`tfcaption.training.scst.ScstStep`, M2's beam mode: k = 5 beams per image, then the CIDEr-D reward on
the host, then the re-scored update; XLA for the two graph parts) on the same number of captions
(images x k), with each SCST part timed on its own: sampling, reward, update. The reward's throughput
(captions scored per second, pure Python CIDEr-D with document frequencies from a synthetic 50,000-caption
corpus) is reported beside it: it is the part no accelerator speeds up. Random weights, random pixels and
synthetic captions of a Zipf-distributed vocabulary: nothing downloads. Prints a table and writes JSON
(default benchmarks/results/scst_cost.json).

    python benchmarks/scst_cost.py                    # small (12 images x 5 beams) and m2 (10 x 5, M2's)
    python benchmarks/scst_cost.py --presets small --repeats 5
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from backbone_cost import step_seconds  # noqa: E402  (this folder; the XE step is shared)
from report import describe_cpu, write_report  # noqa: E402  (this folder)
from tfcaption.data.tokenizer import Vocabulary  # noqa: E402
from tfcaption.models import CaptionerBackbone, CaptionerConfig  # noqa: E402
from tfcaption.training.scst import ScstReward, ScstStep  # noqa: E402

# preset -> (vocabulary words, SCST images per step); k = 5 beams, so XE batches hold images x 5 captions.
CASES = {"small": (45, 12), "m2": (10_197, 10)}  # shapes' vocabulary; M2's 10,201 less the 4 specials
BEAMS, MAX_STEPS, REFERENCES, CORPUS = 5, 20, 5, 50_000


def synthetic_captions(words, count, rng):
    """`count` captions of 8-14 words drawn from a Zipf law over `words` (COCO-like n-gram statistics)."""
    ranks = np.arange(1, len(words) + 1)
    p = 1.0 / ranks
    p /= p.sum()
    lengths = rng.integers(8, 15, count)
    return [" ".join(rng.choice(words, n, p=p)) for n in lengths]


def scst_seconds(config, vocab, reward, images_per_step, repeats, rng):
    """Fastest of `repeats` SCST steps: (sample, reward, update, compile seconds)."""
    model = CaptionerBackbone.from_model_config(config)
    optimizer = keras.optimizers.Adam(5e-6)
    optimizer.build(model.trainable_variables)
    step = ScstStep(model, lambda grads: optimizer.apply(grads, model.trainable_variables), reward, BEAMS, "beam",
                    MAX_STEPS, jit_compile=True, vocab=vocab)
    size = config.image_encoder.image_size
    images = tf.random.uniform((images_per_step, size, size, 3), 0, 255)
    references = tf.constant([synthetic_captions(vocab.tokens[4:], REFERENCES, rng) for _ in range(images_per_step)])
    seed = tf.constant([0, 0], tf.int64)

    def once():
        started = time.perf_counter()
        samples = step.sample_function(images, seed)
        samples["tokens"].numpy()
        sampled = time.perf_counter()
        rewards, greedy = step._score(samples, references)
        scored = time.perf_counter()
        step.update_function(images, samples["tokens"], tf.constant(rewards), tf.constant(greedy))[0].numpy()
        return sampled - started, scored - sampled, time.perf_counter() - scored

    started = time.perf_counter()
    once()  # compiles both graph parts
    compile_seconds = time.perf_counter() - started
    times = [once() for _ in range(repeats)]
    best = min(times, key=sum)
    return (*best, compile_seconds)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per setting (the fastest is kept)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "scst_cost.json"))
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    rows = []
    for preset in args.presets:
        words, images = CASES[preset]
        names = [f"w{i}" for i in range(words)]
        corpus = synthetic_captions(names, CORPUS, rng)
        vocab = Vocabulary.build(corpus)
        config = CaptionerConfig.from_preset(preset, vocab_size=vocab.size, max_length=max(MAX_STEPS + 1, 22))
        started = time.perf_counter()
        reward = ScstReward(corpus)
        corpus_seconds = time.perf_counter() - started
        captions = images * BEAMS
        xe, xe_compile, _ = step_seconds(config, captions, args.repeats)
        keras.backend.clear_session()
        sample, score, update, scst_compile = scst_seconds(config, vocab, reward, images, args.repeats, rng)
        keras.backend.clear_session()
        scst = sample + score + update
        rows.append({"preset": preset, "vocab_size": vocab.size, "images_per_step": images, "captions_per_step": captions,
                     "xe_step_s": xe, "xe_compile_s": xe_compile, "scst_step_s": scst, "scst_sample_s": sample,
                     "scst_reward_s": score, "scst_update_s": update, "scst_compile_s": scst_compile,
                     "xe_captions_per_s": captions / xe, "scst_captions_per_s": captions / scst,
                     "reward_captions_per_s": captions / score, "reward_corpus_s": corpus_seconds})

    machine = describe_cpu()
    print(f"k = {BEAMS} beams, {MAX_STEPS} steps, {REFERENCES} references per image, XLA, float32; {machine}")
    print(f"{'preset':<7} {'captions':>8} {'XE s/step':>9} {'SCST s/step':>11} {'sample':>7} {'reward':>7} "
          f"{'update':>7} {'XE capt/s':>9} {'SCST capt/s':>11} {'reward capt/s':>13} {'SCST/XE':>7}")
    for r in rows:
        print(f"{r['preset']:<7} {r['captions_per_step']:>8} {r['xe_step_s']:>9.3f} {r['scst_step_s']:>11.3f} "
              f"{r['scst_sample_s']:>7.3f} {r['scst_reward_s']:>7.3f} {r['scst_update_s']:>7.3f} "
              f"{r['xe_captions_per_s']:>9.0f} {r['scst_captions_per_s']:>11.0f} {r['reward_captions_per_s']:>13.0f} "
              f"{r['scst_step_s'] / r['xe_step_s']:>7.1f}")
    write_report(args.out, {"beams": BEAMS, "max_steps": MAX_STEPS, "references": REFERENCES,
                            "corpus_captions": CORPUS, "machine": machine, "rows": rows})


if __name__ == "__main__":
    main()
