"""tfcaption beside the Meshed-Memory Transformer authors' PyTorch code, on identical shapes, in one run.

XE training (forward, backward and an Adam step on a batch of captions, each with its own 50 x 2048 region
features) and beam search (k beams for a fixed number of steps from the region features, encoder included)
are timed for both implementations on the same machine, one after the other, each in its own child process
of this one, so that peak memory (the child's maximum resident set) belongs to one implementation and one
task. The authors' code comes from a checkout you give (`--reference-src`, never vendored) and runs under a
Python that has torch (`--reference-python`; torch is never a dependency of tfcaption):

    git clone https://github.com/aimagelab/meshed-memory-transformer ~/src/m2
    python3 -m venv ~/m2env && ~/m2env/bin/pip install torch numpy requests
    python benchmarks/compare_reference.py --reference-src ~/src/m2 --reference-python ~/m2env/bin/python

Shapes: `paper` is the M2 paper's configuration (d 512, 8 heads, 3 + 3 layers, 40 memory slots, d_ff 2048,
vocabulary 10,201, 50 regions; XE on 50 captions of 14 tokens, as M2's train.py batches them); `small` is
the `small` preset's sizes (d 128, 4 heads, 16 memory slots, 2 decoder layers, d_ff 512, the shapes
vocabulary, 36 tokens per image; XE on the default 64 captions of 27 tokens) with three encoder layers,
because the authors' meshed decoder layer reads exactly three encoder levels. Beam search: k = 5, 20 steps,
10 images, no early stop (the reference always runs every step). Random weights and inputs: nothing
downloads, and the cost does not depend on the values.

The reference runs as released except for two edits that current torch requires and that change no result
(`REFERENCE_PATCHES`), applied to a temporary copy. tfcaption runs the `m2_reference` preset (the layers that
reproduce the released model exactly), XLA-compiled, in float32 and in mixed_bfloat16. "% peak" is the
FLOPs the work needs (benchmarks/flop_counts.py; the same count for both) over the time, against a float32
2048 x 2048 matmul measured here under XLA (torch's own matmul rate is printed beside it). Prints a table
and writes JSON (default benchmarks/results/compare_reference.json).

`--reference-src ""` (the default) skips the authors' code (no torch needed; the table says so), which
leaves tfcaption alone, or tfcaption against another commit of itself:

    git worktree add --detach ../baseline-6331ce5 6331ce5
    python benchmarks/compare_reference.py --baseline-src ../baseline-6331ce5

`--baseline-src DIR` is a checkout of tfcaption at another commit. For every tfcaption row (shape, task,
policy) the baseline's own `benchmarks/compare_reference.py --child tfcaption` runs with cwd DIR and
PYTHONPATH=DIR, and this checkout's child with PYTHONPATH set to this checkout (before timing, each side's
Python is checked to import `tfcaption` from its own checkout, so an editable install elsewhere cannot
stand in for either side).
Children alternate, baseline first in odd rounds and current first in even ones (`--rounds`, default 2:
A B B A), so that the host's drift falls on both sides alike. Each side's seconds are the mean of its
rounds; the table gives baseline seconds, current seconds and current / baseline per row and ends with
"worst ratio X (limit 1.05)". `--label` names the baseline (default: its `git rev-parse --short HEAD`).
With `--reference-src` as well, the authors' code runs once per shape and task beside them.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)  # this checkout of tfcaption
BASELINE_LIMIT = 1.05  # current / baseline seconds, per row
PAD, BOS, EOS, FIRST_WORD = 1, 2, 3, 4  # the reference vocabulary's special ids (<unk> 0)

PAPER = dict(hidden_dim=512, num_heads=8, key_dim=64, intermediate_dim=2048, encoder_layers=3, decoder_layers=3,
             memory_slots=40, vocab_size=10_201, regions=50, feature_dim=2048, dropout=0.1,
             xe_captions=50, caption_tokens=14)
BEAM = dict(images=10, beams=5, steps=20)

# (file, released text, replacement, why): the smallest edits that let the released code run on torch >= 1.5.
REFERENCE_PATCHES = (
    ("models/transformer/decoders.py", "torch.zeros((1, 1, 0)).byte()", "torch.zeros((1, 1, 0)).bool()",
     "the running self-attention mask starts as uint8; masked_fill takes only boolean masks since torch 1.2"),
    ("models/beam_search/beam_search.py", "selected_beam = selected_idx / candidate_logprob.shape[-1]",
     "selected_beam = selected_idx // candidate_logprob.shape[-1]",
     "`/` on integer tensors is true division since torch 1.5, and gather needs integer beam indices"),
)


class UsageError(Exception):
    """A mistake the user can fix (a wrong path, a Python without torch): one line, exit code 2."""


def small_shape():
    from decode_cost import VOCAB

    from tfcaption.config import DataConfig, TrainConfig
    from tfcaption.models import CaptionerConfig

    config = CaptionerConfig.from_preset("small")
    patches = config.image_encoder.image_size // config.image_encoder.patch_size
    return dict(hidden_dim=config.hidden_dim, num_heads=config.num_heads, key_dim=config.key_dim,
                intermediate_dim=config.intermediate_dim, encoder_layers=3, decoder_layers=config.decoder.num_layers,
                memory_slots=config.encoder.memory_slots, vocab_size=VOCAB["small"], regions=patches ** 2,
                feature_dim=2048, dropout=config.dropout, xe_captions=TrainConfig().batch_size,
                caption_tokens=DataConfig().max_tokens)


def mean_seconds(call, repeats, warmups=2):
    """Mean wall time of `repeats` calls after `warmups` (compilation, allocator warm-up); `call` blocks."""
    for _ in range(warmups):
        call()
    started = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - started) / repeats


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----- the children: each times one task of one implementation and prints "RESULT {json}" -----

def reference_child(src, shape, task, repeats):
    """The authors' model and their train.py's XE step / test-time beam search, under torch."""
    import torch

    sys.path.insert(0, src)
    from models.transformer import MemoryAugmentedEncoder, MeshedDecoder, ScaledDotProductAttentionMemory, Transformer

    torch.manual_seed(0)
    sizes = dict(d_model=shape["hidden_dim"], d_k=shape["key_dim"], d_v=shape["key_dim"], h=shape["num_heads"],
                 d_ff=shape["intermediate_dim"], dropout=shape["dropout"])
    encoder = MemoryAugmentedEncoder(shape["encoder_layers"], 0, d_in=shape["feature_dim"],
                                     attention_module=ScaledDotProductAttentionMemory,
                                     attention_module_kwargs={"m": shape["memory_slots"]}, **sizes)
    decoder = MeshedDecoder(shape["vocab_size"], 54, shape["decoder_layers"], PAD, **sizes)
    model = Transformer(BOS, encoder, decoder)
    vocab = shape["vocab_size"]
    if task == "xe":
        detections = torch.randn(shape["xe_captions"], shape["regions"], shape["feature_dim"])
        captions = torch.randint(FIRST_WORD, vocab, (shape["xe_captions"], shape["caption_tokens"]))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98))
        loss_fn = torch.nn.NLLLoss(ignore_index=PAD)
        model.train()

        def call():
            out = model(detections, captions)
            optimizer.zero_grad()
            loss = loss_fn(out[:, :-1].contiguous().view(-1, vocab), captions[:, 1:].contiguous().view(-1))
            loss.backward()
            optimizer.step()
            return loss.item()
    else:
        images = torch.randn(BEAM["images"], shape["regions"], shape["feature_dim"])
        model.eval()

        def call():
            with torch.no_grad():
                return model.beam_search(images, BEAM["steps"], EOS, BEAM["beams"], out_size=1)[0].numpy()

    seconds = mean_seconds(call, repeats)
    a = torch.randn(2048, 2048)
    matmul = min(_timed(lambda: torch.matmul(a, a)) for _ in range(5))
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "threads": torch.get_num_threads(),
            "torch_version": torch.__version__, "torch_matmul_gflop_per_s": 2 * 2048 ** 3 / matmul / 1e9}


def tfcaption_child(shape, task, repeats, policy):
    """tfcaption's `m2_reference` layers at the shape's sizes, its XE step and compiled beam search (XLA)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, HERE)
    import tensorflow as tf
    from backbone_cost import SPECIAL_IDS
    from training_throughput import example_inputs, xe_step

    from tfcaption.decoding.captioning import compiled_generator
    from tfcaption.models import CaptionerBackbone

    config = tfcaption_config(shape, policy)
    if task == "xe":
        step, _ = xe_step(config, shape["xe_captions"], shape["caption_tokens"], regions=shape["regions"])
        seconds = mean_seconds(lambda: step().numpy(), repeats)
    else:
        model = CaptionerBackbone.from_model_config(config)
        images = example_inputs(model, BEAM["images"], shape["regions"])
        generate = compiled_generator(model, BEAM["beams"], BEAM["steps"], stop_early=False, special_ids=SPECIAL_IDS)
        seconds = mean_seconds(lambda: generate(images)["tokens"].numpy(), repeats)
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "tensorflow_version": tf.__version__}


def tfcaption_config(shape, policy):
    from tfcaption.models import CaptionerConfig

    return CaptionerConfig.from_preset(
        "m2_reference", vocab_size=shape["vocab_size"], hidden_dim=shape["hidden_dim"], num_heads=shape["num_heads"],
        key_dim=shape["key_dim"], intermediate_dim=shape["intermediate_dim"], dropout=shape["dropout"],
        dtype_policy=policy, image_encoder=dict(feature_dim=shape["feature_dim"]),
        encoder=dict(num_layers=shape["encoder_layers"], memory_slots=shape["memory_slots"]),
        decoder=dict(num_layers=shape["decoder_layers"]))


def _timed(fn):
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


# ----- the parent -----

def patched_reference(src, into):
    """A copy of the checkout's `models` and `utils` packages with `REFERENCE_PATCHES` applied."""
    if not os.path.isfile(os.path.join(src, "models", "transformer", "attention.py")):
        raise UsageError(f"--reference-src {src}: not a checkout of aimagelab/meshed-memory-transformer "
                         "(no models/transformer/attention.py)")
    for package in ("models", "utils"):
        shutil.copytree(os.path.join(src, package), os.path.join(into, package))
    for relative, released, replacement, _ in REFERENCE_PATCHES:
        path = os.path.join(into, relative)
        with open(path) as f:
            text = f.read()
        if replacement in text:
            continue  # a checkout that already carries the fix
        if text.count(released) != 1:
            raise UsageError(f"--reference-src {src}: {relative} differs from the released code "
                             f"(expected one {released!r}); this benchmark times the released version")
        with open(path, "w") as f:
            f.write(text.replace(released, replacement))
    return into


def run_child(python, side, shape, task, repeats, reference_src="", policy="", checkout=None):
    """One child; `checkout` (a tfcaption checkout) runs that checkout's script with its code first on the path."""
    script, env, cwd = os.path.abspath(__file__), None, None
    if checkout is not None:
        script = os.path.join(checkout, "benchmarks", "compare_reference.py")
        env, cwd = checkout_env(checkout), checkout
    command = [python, script, "--child", side, "--task", task, "--shape", json.dumps(shape),
               "--repeats", str(repeats), "--reference-src", reference_src, "--policy", policy]
    where = f" ({checkout})" if checkout else ""
    return child_result(command, f"{side}{where} {task}", env=env, cwd=cwd)


def child_result(command, what, env=None, cwd=None):
    """Runs a child that prints "RESULT {json}" and returns that dict, or raises naming `what` with its stderr."""
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)
    results = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not results:
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(results[-1][len("RESULT "):])


def checkout_env(checkout):
    """The environment with `checkout` first on PYTHONPATH, so that its `tfcaption` wins over any install."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([checkout] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def git_label(checkout):
    """`git rev-parse --short HEAD` of the checkout, with "-dirty" when its tracked files differ from it."""
    try:
        head = subprocess.run(["git", "-C", checkout, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True)
        dirty = subprocess.run(["git", "-C", checkout, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True)
    except OSError:
        return os.path.basename(os.path.normpath(checkout))
    if head.returncode != 0:
        return os.path.basename(os.path.normpath(checkout))
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def check_checkout(checkout, python, flag):
    """`checkout` has the child script, and its Python imports `tfcaption` from it (not from an install)."""
    script = os.path.join(checkout, "benchmarks", "compare_reference.py")
    if not os.path.isfile(os.path.join(checkout, "tfcaption", "__init__.py")) or not os.path.isfile(script):
        raise UsageError(f"{flag} {checkout}: not a checkout of tfcaption with benchmarks/compare_reference.py")
    with open(script) as f:
        if '"--child"' not in f.read():
            raise UsageError(f"{flag} {checkout}: its compare_reference.py has no --child interface")
    done = subprocess.run([python, "-c", "import os, tfcaption; print(os.path.dirname(tfcaption.__file__))"],
                          capture_output=True, text=True, env=checkout_env(checkout), cwd=checkout)
    found = done.stdout.strip()
    expected = os.path.join(checkout, "tfcaption")
    if done.returncode != 0 or os.path.realpath(found) != os.path.realpath(expected):
        raise UsageError(f"{flag} {checkout}: its children would import tfcaption from {found or done.stderr!r}, "
                         f"not {expected}")


def check_reference_python(python, modules=("torch", "numpy")):
    try:
        done = subprocess.run([python, "-c", "import " + ", ".join(modules)], capture_output=True, text=True)
    except OSError as error:
        raise UsageError(f"--reference-python {python}: {error.strerror}") from None
    if done.returncode != 0:
        raise UsageError(f"--reference-python {python}: cannot import {' and '.join(modules)} "
                         f"({done.stderr.strip().splitlines()[-1]}); install them in that environment")


def compare(reference_src, reference_python, shape_names, policies, repeats, baseline_src="", label="",
            rounds=2):
    from flop_counts import Sizes, beam_search_flops, xe_step_flops

    from decode_cost import matmul_peak_gflops

    if reference_src:
        check_reference_python(reference_python)
    check_checkout(ROOT, sys.executable, "this checkout")
    baseline = None
    if baseline_src:
        if rounds < 1:
            raise UsageError(f"--rounds {rounds}: at least one round")
        baseline_src = os.path.abspath(baseline_src)
        check_checkout(baseline_src, sys.executable, "--baseline-src")
        baseline = {"src": baseline_src, "label": label or git_label(baseline_src), "current_label": git_label(ROOT),
                    "rounds": rounds, "order": "baseline first in odd rounds, current first in even rounds",
                    "limit": BASELINE_LIMIT, "rows": []}
    shapes = {"paper": PAPER, "small": small_shape()}
    peak = matmul_peak_gflops()
    rows, versions = [], {}

    def tfcaption_runs(name, shape, task, policy):
        """(current result, baseline result or None), the sides' children alternating over the rounds."""
        def once(checkout):
            return run_child(sys.executable, "tfcaption", shape, task, repeats, policy=policy, checkout=checkout)

        if baseline is None:
            return once(ROOT), None
        runs = {"baseline": [], "current": []}
        for round_ in range(rounds):
            order = ("baseline", "current") if round_ % 2 == 0 else ("current", "baseline")
            for side in order:
                runs[side].append(once(baseline_src if side == "baseline" else ROOT))
        mean = {side: sum(r["seconds"] for r in results) / len(results) for side, results in runs.items()}
        baseline["rows"].append({"shape": name, "task": task, "policy": policy,
                                 "baseline_seconds": mean["baseline"], "current_seconds": mean["current"],
                                 "ratio": mean["current"] / mean["baseline"],
                                 "baseline_runs": [r["seconds"] for r in runs["baseline"]],
                                 "current_runs": [r["seconds"] for r in runs["current"]]})
        merged = [dict(results[0], seconds=mean[side], peak_rss_mb=max(r["peak_rss_mb"] for r in results))
                  for side, results in (("current", runs["current"]), ("baseline", runs["baseline"]))]
        return merged[0], merged[1]

    with tempfile.TemporaryDirectory() as work:
        source = patched_reference(os.path.abspath(reference_src), work) if reference_src else None
        for name in shape_names:
            shape = shapes[name]
            sizes = Sizes(shape["hidden_dim"], shape["intermediate_dim"], shape["vocab_size"], shape["encoder_layers"],
                          shape["decoder_layers"], shape["memory_slots"], shape["regions"], shape["feature_dim"])
            for task in ("xe", "beam"):
                if task == "xe":
                    images = captions = shape["xe_captions"]
                    flops = xe_step_flops(sizes, images, captions, shape["caption_tokens"] - 1)
                else:
                    images = captions = BEAM["images"]
                    flops = beam_search_flops(sizes, images, BEAM["beams"], BEAM["steps"])
                runs = []
                if source:
                    runs.append(("M2 reference (torch)", "float32",
                                 run_child(reference_python, "reference", shape, task, repeats, reference_src=source)))
                for policy in policies:
                    current, before = tfcaption_runs(name, shape, task, policy)
                    runs.append(("tfcaption (XLA)", policy, current))
                    if before is not None:
                        runs.append((f"tfcaption @{baseline['label']}", policy, before))
                reference_seconds = runs[0][2]["seconds"] if source else None
                for implementation, policy, result in runs:
                    versions.update({k: v for k, v in result.items() if k.endswith("_version")})
                    seconds = result["seconds"]
                    rows.append({"shape": name, "task": task, "implementation": implementation, "policy": policy,
                                 "seconds": seconds, "captions_per_s": captions / seconds,
                                 "images_per_s": images / seconds,
                                 "speedup_vs_reference": reference_seconds / seconds if source else None,
                                 "gflop": flops / 1e9, "percent_of_matmul_peak": 100 * flops / seconds / 1e9 / peak,
                                 "peak_rss_mb": result["peak_rss_mb"],
                                 **{k: v for k, v in result.items() if k in ("threads", "torch_matmul_gflop_per_s")}})
    report = {"shapes": {n: shapes[n] for n in shape_names}, "beam": BEAM, "xla_matmul_gflop_per_s": peak,
              "versions": versions, "reference": os.path.abspath(reference_src) if reference_src else None,
              "reference_patches": [p[3] for p in REFERENCE_PATCHES] if reference_src else [], "rows": rows}
    if baseline is not None:
        baseline["worst_ratio"] = max(r["ratio"] for r in baseline["rows"])
        baseline["within_limit"] = baseline["worst_ratio"] <= BASELINE_LIMIT
        report["baseline"] = baseline
    return report


def print_table(report, machine):
    torch_peak = next((r["torch_matmul_gflop_per_s"] for r in report["rows"] if "torch_matmul_gflop_per_s" in r), 0)
    torch_rate = f", torch {torch_peak:.0f} GFLOP/s" if torch_peak else ""
    print(f"Machine: {machine}; float32 2048x2048 matmul: XLA {report['xla_matmul_gflop_per_s']:.0f} GFLOP/s"
          f"{torch_rate}; {report['versions']}")
    print(f"XE: one step (forward, backward, Adam); beam: k={BEAM['beams']}, {BEAM['steps']} steps, "
          f"{BEAM['images']} images")
    print(f"{'shape':<6} {'task':<5} {'implementation':<21} {'policy':<15} {'s/call':>7} {'capt/s':>7} "
          f"{'img/s':>7} {'vs ref':>7} {'GFLOP':>7} {'% peak':>6} {'peak MB':>8}")
    for r in report["rows"]:
        speedup = "-" if r["speedup_vs_reference"] is None else f"{r['speedup_vs_reference']:.2f}x"
        print(f"{r['shape']:<6} {r['task']:<5} {r['implementation']:<21} {r['policy']:<15} {r['seconds']:>7.3f} "
              f"{r['captions_per_s']:>7.1f} {r['images_per_s']:>7.1f} {speedup:>7} "
              f"{r['gflop']:>7.1f} {r['percent_of_matmul_peak']:>6.1f} {r['peak_rss_mb']:>8.0f}")
    if not report["reference"]:
        print("M2 reference (torch): skipped (no --reference-src); \"vs ref\" is empty")
    baseline = report.get("baseline")
    if baseline:
        print(f"\nBaseline {baseline['label']} ({baseline['src']}) against current {baseline['current_label']}: "
              f"{baseline['rounds']} round(s) per row, {baseline['order']}; seconds are the rounds' mean")
        print(f"{'shape':<6} {'task':<5} {'policy':<15} {'baseline s':>10} {'current s':>10} {'ratio':>7}  "
              f"rounds (baseline / current)")
        for r in baseline["rows"]:
            spread = (" ".join(f"{s:.3f}" for s in r["baseline_runs"]) + " / "
                      + " ".join(f"{s:.3f}" for s in r["current_runs"]))
            print(f"{r['shape']:<6} {r['task']:<5} {r['policy']:<15} {r['baseline_seconds']:>10.3f} "
                  f"{r['current_seconds']:>10.3f} {r['ratio']:>7.3f}  {spread}")
        print(f"worst ratio {baseline['worst_ratio']:.3f} (limit {baseline['limit']:.2f}): "
              f"{'within' if baseline['within_limit'] else 'OVER'}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference-src", default="",
                        help='a checkout of aimagelab/meshed-memory-transformer ("": skip the reference)')
    parser.add_argument("--reference-python", default="python3", help="a Python with torch and numpy")
    parser.add_argument("--shapes", nargs="+", default=["paper", "small"], choices=["paper", "small"])
    parser.add_argument("--policies", nargs="+", default=["float32", "mixed_bfloat16"],
                        choices=["float32", "mixed_bfloat16"], help="tfcaption's dtype policies to time")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per row, after two warm-up calls")
    parser.add_argument("--baseline-src", default="",
                        help="a checkout of tfcaption at another commit, timed beside this one per tfcaption row")
    parser.add_argument("--label", default="", help="the baseline's name (default: its git rev-parse --short HEAD)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="with --baseline-src: children per side and row, the order alternating (default 2)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "compare_reference.json"))
    parser.add_argument("--child", choices=["reference", "tfcaption"], help=argparse.SUPPRESS)
    parser.add_argument("--task", choices=["xe", "beam"], help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    parser.add_argument("--policy", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        shape = json.loads(args.shape)
        if args.child == "reference":
            result = reference_child(args.reference_src, shape, args.task, args.repeats)
        else:
            result = tfcaption_child(shape, args.task, args.repeats, args.policy)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    sys.path[:0] = [HERE, ROOT]  # the parent reads this checkout's tfcaption, as its children do
    try:
        report = compare(args.reference_src, args.reference_python, args.shapes, args.policies, args.repeats,
                         baseline_src=args.baseline_src, label=args.label, rounds=args.rounds)
    except UsageError as error:
        print(f"compare_reference.py: {error}", file=sys.stderr)
        return 2
    from report import describe_cpu, write_report

    machine = describe_cpu()
    report = {"machine": machine, "cores": os.cpu_count(), **report}
    print_table(report, machine)
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
