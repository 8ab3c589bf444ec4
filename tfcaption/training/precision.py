"""Which Keras dtype policy a training run computes in: `model.dtype_policy = "auto"` resolved at start-up.

- TPUs: `mixed_bfloat16` (their matrix units are bfloat16).
- GPUs: compute capability 8.0 and later (Ampere, Hopper) `mixed_bfloat16`; 7.x (V100, Colab's T4) has fast
  float16 but no bfloat16, so `mixed_float16`, which the trainer pairs with dynamic loss scaling; older GPUs
  float32.
- CPUs: `mixed_bfloat16` only where it is measured faster. Without AVX-512 BF16 or AMX instructions bfloat16
  is emulated, so float32 without measuring; with them, the model's own feed-forward matmuls (its batch's
  token rows x hidden x intermediate, casts included, as Keras's mixed policy runs them) are timed in both
  precisions under XLA, and bfloat16 must be `CPU_SPEEDUP_NEEDED` faster: at small widths the casts cost
  more than the faster matmuls save.

Logits, softmax and losses are float32 under every policy (the decoder's head is a float32 layer). The
resolved policy is written to the run's config.json, so a resumed run, `tfcaption.load` and the export
compute as the run trained; an explicit `--set model.dtype_policy=...` is never second-guessed.
"""

import dataclasses
import time

import numpy as np
import tensorflow as tf

from tfcaption.training.strategy import worker_task

POLICIES = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
CPU_SPEEDUP_NEEDED = 1.2
BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclasses.dataclass(frozen=True)
class PrecisionChoice:
    policy: str
    reason: str

    def describe(self):
        return f"{self.policy} ({self.reason})"


def check_policy(policy):
    if policy not in POLICIES:
        raise ValueError(f"model.dtype_policy must be one of {', '.join(POLICIES)}; got {policy!r}.")


def choose_policy(requested, strategy, rows, hidden_dim, intermediate_dim, measure=None):
    """The policy to train in, and why.

    Args:
        requested: the config's `model.dtype_policy`; anything but "auto" is returned as asked.
        strategy: the run's tf.distribute strategy (its devices decide).
        rows, hidden_dim, intermediate_dim: a training step's token rows (batch x tokens) and the model's
            feed-forward sizes, the shapes the CPU measurement times.
        measure: `measure(rows, hidden_dim, intermediate_dim) -> bfloat16 speed-up`; default
            `cpu_bfloat16_speedup` (tests pass their own).
    """
    check_policy(requested)
    if requested != "auto":
        return PrecisionChoice(requested, "as configured")
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return PrecisionChoice("mixed_bfloat16", "auto: TPU")
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capabilities = [tf.config.experimental.get_device_details(g).get("compute_capability") or (0, 0)
                        for g in gpus]
        oldest = min(capabilities)
        name = f"GPU compute capability {oldest[0]}.{oldest[1]}"
        if oldest >= (8, 0):
            return PrecisionChoice("mixed_bfloat16", f"auto: {name} computes bfloat16 at full rate")
        if oldest >= (7, 0):
            return PrecisionChoice("mixed_float16", f"auto: {name} has fast float16 and no bfloat16; "
                                                    "dynamic loss scaling")
        return PrecisionChoice("float32", f"auto: {name} has neither fast float16 nor bfloat16")
    flags = cpu_flags()
    if flags is not None and not any(f in flags for f in BFLOAT16_CPU_FLAGS):
        return PrecisionChoice("float32", "auto: this CPU has no bfloat16 instructions (AVX-512 BF16 or AMX)")
    speedup = (measure or cpu_bfloat16_speedup)(rows, hidden_dim, intermediate_dim)
    speedup = _agreed_minimum(strategy, speedup)
    shapes = f"{rows}x{hidden_dim}x{intermediate_dim}"
    if speedup >= CPU_SPEEDUP_NEEDED:
        return PrecisionChoice("mixed_bfloat16", f"auto: bfloat16 {speedup:.2f}x float32 on this CPU at this "
                                                 f"model's feed-forward ({shapes})")
    return PrecisionChoice("float32", f"auto: bfloat16 only {speedup:.2f}x float32 on this CPU at this model's "
                                      f"feed-forward ({shapes}; needs {CPU_SPEEDUP_NEEDED}x)")


def cpu_flags():
    """The CPU's feature flags from /proc/cpuinfo (a set), or None where that file does not exist."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def cpu_bfloat16_speedup(rows, hidden_dim, intermediate_dim, seconds=0.25):
    """float32 time / bfloat16 time of one feed-forward block (two matmuls and a ReLU, forward), each
    XLA-compiled and timed as the best of repeated runs for about `seconds`."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((rows, hidden_dim)), tf.float32)
    w1 = tf.constant(rng.standard_normal((hidden_dim, intermediate_dim)) * 0.05, tf.float32)
    w2 = tf.constant(rng.standard_normal((intermediate_dim, hidden_dim)) * 0.05, tf.float32)

    def block(dtype):
        @tf.function(jit_compile=True)
        def run(x, w1, w2):  # a mixed policy casts inputs and variables at every call
            h = tf.nn.relu(tf.matmul(tf.cast(x, dtype), tf.cast(w1, dtype)))
            return tf.cast(tf.matmul(h, tf.cast(w2, dtype)), tf.float32)
        return run

    def best_time(fn):
        fn(x, w1, w2).numpy()  # compile
        best, deadline = float("inf"), time.perf_counter() + seconds
        while time.perf_counter() < deadline or best == float("inf"):
            start = time.perf_counter()
            fn(x, w1, w2).numpy()
            best = min(best, time.perf_counter() - start)
        return best

    return best_time(block(tf.float32)) / best_time(block(tf.bfloat16))


def _agreed_minimum(strategy, value):
    """The smallest `value` over a multi-worker run's workers, so that all of them compute alike."""
    if worker_task(strategy)[0] is None:
        return value
    per_replica = strategy.run(lambda: tf.constant([value], tf.float32))
    return float(tf.reduce_min(strategy.gather(per_replica, axis=0)))


def resolve_precision(model_config, strategy, batch_size, max_tokens, log=print):
    """The run's model config with its `dtype_policy` resolved (`choose_policy`, logged), and whether the loss
    is scaled (mixed_float16: float16's narrow range needs the loss scaled up, and steps whose gradients
    overflow skipped). Returns (model config, loss scaling); `model_config` itself is not changed."""
    precision = choose_policy(model_config.dtype_policy, strategy, rows=batch_size * max_tokens,
                              hidden_dim=model_config.hidden_dim, intermediate_dim=model_config.intermediate_dim)
    log(f"Precision: {precision.describe()}")
    return model_config.replace(dtype_policy=precision.policy), precision.policy == "mixed_float16"
