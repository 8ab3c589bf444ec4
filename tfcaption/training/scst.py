"""Self-critical sequence training (SCST): fine-tune a captioner on its own CIDEr-D.

After cross-entropy training, SCST (Rennie et al. 2017) optimises the expected reward of the captions the
model itself produces, with the REINFORCE gradient

    grad = -E[(r(w) - b) * grad log p(w | image)]

where w is a caption drawn from the model, r its reward (CIDEr-D against the image's references) and b a
baseline that does not depend on w (it only reduces the variance). M2 (`train_scst` in the released
train.py) draws the k = 5 beams of a beam search, rewards each with CIDEr-D, and takes the mean reward of
the image's k beams as the baseline. One training step here has three parts:

1. `sample_sequences` (graph, XLA): k captions per image drawn through `tfcaption.samplers` -- the k beams
   of a `BeamSampler` ("beam", M2), k `RandomSampler` samples ("multinomial", for Luo's leave-one-out
   baseline), or k samples plus the `GreedySampler` caption ("greedy_baseline", Rennie's original
   baseline); <pad> and <bos> banned by the samplers' `banned_token_ids`.
2. `ScstReward` (host, numpy): token ids -> words -> CIDEr-D (optionally mixed with BLEU-4) of every
   candidate against its image's references, with document frequencies from the training captions.
   Strings never enter a compiled function.
3. `sequence_log_probs` + `baseline` + `scst_loss` (graph, XLA, under a GradientTape): the samples'
   log-probabilities are recomputed by teacher forcing in training mode, so the gradient is one ordinary
   backward pass through one parallel decoder pass (M2 backpropagates through its search instead; through
   a graph while-loop that would keep every step's activations and cache updates for the backward pass).

`ScstStep` glues the three together for one batch, compiling each graph part once.

References:
    Rennie et al., "Self-critical Sequence Training for Image Captioning", CVPR 2017.
    Luo, "A Better Variant of Self-Critical Sequence Training", arXiv 2003.09971 (leave-one-out baseline).
    Cornia et al., "Meshed-Memory Transformer for Image Captioning", CVPR 2020 (beam SCST, `train_scst`).
    Hu, Cavicchioli, Capotondi, "A request for clarity over the End of Sequence token in the Self-Critical
    Sequence Training" (SacreEOS), arXiv 2305.12254 (the <eos> convention of the reward).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfcaption.data.tokenizer import SpecialIds
from tfcaption.decoding.captioning import decode
from tfcaption.samplers import BeamSampler, GreedySampler, RandomSampler
from tfcaption.samplers.utils import combine_seeds
from tfcaption.metrics.cider import CiderD
from tfcaption.metrics.coco import ptb_tokenize_python
from tfcaption.training.strategy import is_single_device

__all__ = ["MODES", "scst_sampler", "sample_sequences", "sequence_log_probs", "caption_mask", "baseline", "scst_loss",
           "ScstReward", "ScstStep", "references_from_batch"]

MODES = ("beam", "multinomial", "greedy_baseline")

def _check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"SCST mode must be one of {MODES}, got {mode!r}.")


def _check_steps(model, max_steps):
    # The decoder's position table has max_length + 1 rows (0 = padding), and teacher forcing feeds
    # max_steps tokens at positions 1..max_steps: a longer sample would read past the table (XLA clamps
    # the index silently instead of failing).
    if int(max_steps) < 1 or int(max_steps) > model.config.max_length:
        raise ValueError(f"max_steps must be in 1..{model.config.max_length} (the model's max_length), "
                         f"got {max_steps}.")


def caption_mask(tokens, eos_id):
    """float32 mask of the generated tokens up to and including the first <eos> (all if there is none).

    The <eos> decision is part of the sample (it is what ends the caption and sets its length, which
    CIDEr-D's length penalty rewards or punishes), so it is trained; the <pad> written after it is not.
    """
    is_eos = tf.cast(tf.equal(tokens, eos_id), tf.int32)
    return tf.cast(tf.equal(tf.cumsum(is_eos, axis=-1, exclusive=True), 0), tf.float32)


def _banned_ids(special_ids):
    """<pad> and <bos> (the tokenizer's `special_ids`): the tokens no SCST caption may contain.

    Neither is ever a cross-entropy target, and a <pad> inside a caption would be read as padding when
    `sequence_log_probs` teacher-forces it (position 0, masked from self-attention) and skipped when the
    caption is decoded for the reward: the trained log-probabilities and the reward would belong to another
    sequence than the one sampled. A trained model gives both tokens almost no probability, so the ban
    changes nothing there; an untrained or weakly trained one proposes them (the tests show an untrained
    model's beams full of <pad>).
    """
    ids = SpecialIds.of(special_ids)
    return [ids.pad_id, ids.bos_id]


def scst_sampler(mode, num_samples, special_ids):
    """The sampler of an SCST mode, with the tokenizer's <pad> and <bos> (`special_ids`: a `SpecialIds` or a
    vocabulary) banned (a logit control of every sampler): `BeamSampler(num_beams=k)` for "beam" (M2),
    `RandomSampler` for "multinomial" and "greedy_baseline"."""
    _check_mode(mode)
    banned = _banned_ids(special_ids)
    if mode == "beam":
        return BeamSampler(num_beams=int(num_samples), banned_token_ids=banned)
    return RandomSampler(banned_token_ids=banned)


def _seed_tensor(seed):
    """A (2,) int64 seed from an int, a pair, a tensor, or None (a random one)."""
    if seed is None:
        # Non-reproducible on purpose (the caller asked for no seed); inside XLA this is a stateful op.
        return tf.random.uniform([2], 0, 2**31 - 1, dtype=tf.int64)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    if seed.shape.rank == 0:
        seed = tf.stack([seed, tf.constant(0, tf.int64)])
    return tf.reshape(seed, [2])


def _row_seeds(seed, batch):
    """(B,) per-image seeds from a (2,) seed and each image's row in the batch, so the images of a batch
    draw independently (`RandomSampler` draws per row from its seed and the sample index)."""
    return combine_seeds(seed[0], seed[1], tf.range(batch, dtype=tf.int64))


def sample_sequences(model, image_inputs, num_samples, max_steps, mode, seed=None, *, special_ids):
    """k captions per image for SCST, as graph ops (XLA-compilable inside `tf.function(jit_compile=True)`).

    Samples come from `tfcaption.samplers` (`scst_sampler`): the mode's sampler over the model's decoder,
    with <pad> and <bos> banned as a logit control, so no caption ever contains them (`_banned_ids`:
    either would make the trained sequence and the rewarded caption differ from the sample), in every mode. Sampling runs in inference mode:
    `decoder.step` has no dropout, and the samples should come from the policy whose log-probabilities
    are trained (M2 runs its beam search with dropout on).

    Args:
        model: a `CaptionerBackbone`.
        image_inputs: the model's image input (`model.input_key`), (B, ...).
        num_samples: int k, captions per image.
        max_steps: int, tokens generated at most per caption (<eos> included); at most the model's
            max_length. M2 uses 20.
        mode: "beam" (the k beams of `BeamSampler`, all kept, M2's default), "multinomial" (k samples
            from the softmax, for the leave-one-out baseline) or "greedy_baseline" (k samples and the
            greedy caption, Rennie's self-critical baseline).
        seed: the sampling seed (an int, a pair of ints or a (2,) int tensor); None draws a random one.
            Unused by "beam". Each image of the batch draws from the seed and its row (`_row_seeds`), so
            one seed gives the same samples on every call, compiled or eager.
        special_ids: the tokenizer's start, end and padding ids (`SpecialIds` or the run's vocabulary).

    Returns:
        dict with `tokens` (B, k, max_steps) int32 (<pad> after <eos>); for "multinomial" and
        "greedy_baseline" also `log_probs` (B, k, max_steps) float32, the full softmax's per-token
        log-probabilities (0 after <eos>); for "greedy_baseline" also `greedy_tokens` (B, max_steps)
        int32. (Beams rank by the softmax over the allowed tokens, so their log-probabilities are not
        returned: `sequence_log_probs` gives the full softmax's.)
    """
    _check_mode(mode)
    _check_steps(model, max_steps)
    if int(num_samples) < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    num_samples, max_steps = int(num_samples), int(max_steps)
    ids = SpecialIds.of(special_ids)
    encoder_outputs, encoder_mask = model.encode(image_inputs, training=False)
    sampler = scst_sampler(mode, num_samples, ids)
    if mode == "beam":
        beams = decode(model, encoder_outputs, encoder_mask, sampler, max_steps, special_ids=ids)
        return {"tokens": beams["tokens"]}
    seeds = _row_seeds(_seed_tensor(seed), tf.shape(encoder_outputs)[0])
    samples = decode(model, encoder_outputs, encoder_mask, sampler, max_steps, num_samples=num_samples, seeds=seeds,
                     special_ids=ids)
    outputs = {"tokens": samples["tokens"], "log_probs": samples["log_probs"]}
    if mode == "greedy_baseline":
        # Same encoder outputs: the greedy caption costs one more decoder loop on B rows.
        greedy = GreedySampler(banned_token_ids=_banned_ids(ids))
        outputs["greedy_tokens"] = decode(model, encoder_outputs, encoder_mask, greedy, max_steps,
                                          special_ids=ids)["tokens"][:, 0]
    return outputs


def sequence_log_probs(model, image_inputs, tokens, training=True, *, special_ids):
    """Teacher-forced log-probabilities of given captions, the differentiable half of SCST.

    Each image is encoded once and its encoder keys and values are shared by its k captions (the
    decoder's `captions_per_image`); the decoder reads <bos> + tokens[..., :-1] (<pad> marked as padding) and
    the log-probability
    of each token is taken from a float32 log-softmax (as minus the sparse cross-entropy: the same value, one op whose gradient is
    softmax - one_hot, without gathering from a (B*k, T, vocab) log-softmax).

    Args:
        model: a `CaptionerBackbone`.
        image_inputs: (B, ...) the model's image input.
        tokens: (B, k, T) int captions (<pad> after <eos>), e.g. `sample_sequences`'s `tokens`.
        training: the mode of the forward pass (True for the SCST update: dropout on).
        special_ids: the tokenizer's start, end and padding ids (`SpecialIds` or the run's vocabulary).

    Returns:
        `(log_probs (B, k, T) float32, mask (B, k, T) float32)`: the mask covers every token up to and
        including the first <eos> (`caption_mask`); `log_probs` is 0 where the mask is 0, as the searches
        report it.
    """
    ids = SpecialIds.of(special_ids)
    tokens = tf.cast(tf.convert_to_tensor(tokens), tf.int32)
    shape = tf.shape(tokens)
    k = tokens.shape[1] if tokens.shape[1] is not None else shape[1]
    steps = tokens.shape[2] if tokens.shape[2] is not None else shape[2]
    encoder_outputs, encoder_mask = model.encode(image_inputs, training=training)
    targets = tf.reshape(tokens, [-1, steps])
    inputs = tf.concat([tf.fill([tf.shape(targets)[0], 1], ids.bos_id), targets[:, :-1]], axis=1)
    logits = tf.cast(model.decoder(inputs, encoder_outputs, encoder_mask, training=training, captions_per_image=k,
                                   padding_mask=tf.not_equal(inputs, ids.pad_id)), tf.float32)
    token_log_probs = -tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)
    mask = caption_mask(tokens, ids.eos_id)
    return tf.reshape(token_log_probs, shape) * mask, mask


def baseline(rewards, mode, greedy_rewards=None):
    """The reward baseline b of each sample, (B, k) float32.

    - "beam": the mean reward of the image's k beams (M2).
    - "multinomial": leave-one-out, (sum_j r_j - r_i) / (k - 1): the mean of the image's OTHER samples,
      so b never depends on the sample it baselines and the gradient stays unbiased (Luo 2020).
    - "greedy_baseline": the reward of the image's greedy caption (Rennie et al.), `greedy_rewards` (B,).

    Works on numpy arrays and tensors alike (returns a tensor); rewards are constants (no gradient).
    """
    _check_mode(mode)
    rewards = tf.cast(tf.convert_to_tensor(rewards), tf.float32)
    if mode == "beam":
        return tf.broadcast_to(tf.reduce_mean(rewards, axis=1, keepdims=True), tf.shape(rewards))
    if mode == "multinomial":
        k = rewards.shape[1]
        if k is not None and k < 2:
            raise ValueError("the leave-one-out baseline needs at least 2 samples per image.")
        total = tf.reduce_sum(rewards, axis=1, keepdims=True)
        return (total - rewards) / (tf.cast(tf.shape(rewards)[1], tf.float32) - 1.0)
    if greedy_rewards is None:
        raise ValueError("mode 'greedy_baseline' needs greedy_rewards (the greedy captions' rewards).")
    greedy_rewards = tf.reshape(tf.cast(tf.convert_to_tensor(greedy_rewards), tf.float32), [-1, 1])
    return tf.broadcast_to(greedy_rewards, tf.shape(rewards))


def scst_loss(log_probs, mask, rewards, baselines):
    """The SCST loss: -mean over samples of [(sum_t log_p * mask) / (sum_t mask) * (reward - baseline)].

    Each sample's log-probability is its masked MEAN over its own tokens (<eos> included). M2 instead
    takes `torch.mean(log_probs, -1)` over the fixed 20 steps (log-probabilities after <eos> are 0), i.e.
    divides every sample's sum by 20 whatever its length: the padding steps dilute a short caption's
    term (a 9-token caption's mean log-probability counts 9/20 as much as a 20-token one's), so the
    update weighs long captions more. Dividing by each sample's own length weighs every caption alike.
    (A sample with no trained token, mask all 0, contributes 0.)

    Args:
        log_probs: (B, k, T) per-token log-probabilities (from `sequence_log_probs`).
        mask: (B, k, T) float mask of the trained tokens.
        rewards, baselines: (B, k); treated as constants.

    Returns:
        scalar float32 loss.
    """
    log_probs = tf.cast(log_probs, tf.float32)
    mask = tf.cast(mask, tf.float32)
    advantage = tf.stop_gradient(tf.cast(rewards, tf.float32) - tf.cast(baselines, tf.float32))
    mean_log_prob = tf.math.divide_no_nan(tf.reduce_sum(log_probs * mask, -1), tf.reduce_sum(mask, -1))
    return -tf.reduce_mean(mean_log_prob * advantage)


# ------------------------------------------------------------------------------------------- reward


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def references_from_batch(captions):
    """Reference lists from a batch's `captions` (tf.string or numpy (B, N), padded with ""): B lists of str."""
    values = captions.numpy() if hasattr(captions, "numpy") else captions
    return [[text for text in map(_text, np.atleast_1d(np.asarray(row, dtype=object))) if text] for row in values]


class ScstReward:
    """The SCST reward on token ids, on the host: CIDEr-D (optionally mixed with BLEU-4), no java.

    Captions go ids -> words through the vocabulary (up to the first <eos>), then through
    `ptb_tokenize_python`, the java-free restatement of the PTB tokenisation that the reported metrics
    use (and validation's `CiderD` applies), applied to candidates, references and the training corpus
    alike (M2 PTB-tokenises all three) -- so the reward measures what the evaluation measures. CIDEr-D's document frequencies come from the
    training captions with each caption its own document (`CiderD.from_captions`, M2's SCST corpus),
    built once; the k candidates of every image of a batch are scored against that image's references in
    one `CiderD.score` call.

    Args:
        train_captions: the training captions (raw text), the document-frequency corpus.
        include_eos: append the token "<eos>" to every candidate that ended with <eos>, to every reference
            and to every corpus caption (ruotianluo's self-critical.pytorch convention: n-grams ending in
            <eos> reward ending a caption at the right word, which moves CIDEr-D by several points; Hu et
            al., "SacreEOS", arXiv 2305.12254). A candidate cut off at max_steps without <eos> gets none,
            as in ruotianluo's code (it decided nothing about its end). False (the default) is M2's
            convention: <eos> is not a word.
        bleu_weight: w in (1 - w) * CIDEr-D + w * BLEU-4, BLEU-4 per sentence as pycocoevalcap's `Bleu(4)`
            computes it (its `BleuScorer`, 'closest' reference length, pure Python). 0 by default.
        tokenize: False splits captions on whitespace only (captions already tokenised).

    Example:
        >>> from tfcaption.data.tokenizer import Vocabulary
        >>> vocab = Vocabulary.build(["a red circle", "a blue square"])
        >>> reward = ScstReward(["a red circle", "a blue square"])
        >>> tokens = np.array([[vocab.encode("a red circle") + [3], vocab.encode("a blue") + [3, 1]]])
        >>> reward(tokens, [["a red circle"]], vocab).shape
        (1, 2)
    """

    EOS_WORD = "<eos>"

    def __init__(self, train_captions: Sequence[str], include_eos: bool = False, bleu_weight: float = 0.0,
                 tokenize: bool = True):
        if not 0.0 <= float(bleu_weight) <= 1.0:
            raise ValueError(f"bleu_weight must be in [0, 1], got {bleu_weight}.")
        self.include_eos = bool(include_eos)
        self.bleu_weight = float(bleu_weight)
        self.tokenize = bool(tokenize)
        self._references: dict[str, str] = {}  # raw reference -> scored text (references repeat every epoch)
        corpus = [self._reference(caption) for caption in train_captions]
        if not corpus:
            raise ValueError("ScstReward: train_captions is empty.")
        self.cider = CiderD.from_captions(corpus, tokenize=False)

    def _words(self, text):
        return ptb_tokenize_python(text) if self.tokenize else " ".join(text.split())

    def _reference(self, caption):
        scored = self._references.get(caption)
        if scored is None:
            if len(self._references) > 2_000_000:
                self._references.clear()
            scored = self._words(caption)
            if self.include_eos:
                scored = f"{scored} {self.EOS_WORD}" if scored else self.EOS_WORD
            self._references[caption] = scored
        return scored

    @staticmethod
    def decode(tokens, vocab):
        """Caption strings of token ids, in the ids' layout without the time axis.

        (T,) -> str, (B, T) -> B strings, (B, k, T) -> B lists of k strings; each stops at the first
        <eos> and skips <pad>/<bos> (`vocab.decode`).
        """
        ids = np.asarray(tokens)
        if ids.ndim == 1:
            return vocab.decode(ids.tolist())
        texts = [vocab.decode(row) for row in ids.reshape(-1, ids.shape[-1]).tolist()]
        return np.array(texts, dtype=object).reshape(ids.shape[:-1]).tolist()

    def candidates(self, tokens, vocab):
        """The scored text of each caption in (B, k, T) ids, flattened to B * k strings."""
        ids = np.asarray(tokens)
        rows = ids.reshape(-1, ids.shape[-1])
        texts = [self._words(vocab.decode(row)) for row in rows.tolist()]
        if self.include_eos:
            ended = (rows == vocab.eos_id).any(axis=1)
            texts = [(f"{t} {self.EOS_WORD}" if t else self.EOS_WORD) if end else t for t, end in zip(texts, ended)]
        return texts

    def __call__(self, tokens, references, vocab):
        """Rewards (B, k) float32 of captions `tokens` (B, k, T) ints against B reference lists of str.

        Empty reference strings (a batch's padding) are dropped.
        """
        ids = np.asarray(tokens)
        if ids.ndim != 3:
            raise ValueError(f"ScstReward: tokens must be (B, k, T), got shape {ids.shape}.")
        batch, k = ids.shape[:2]
        if len(references) != batch:
            raise ValueError(f"ScstReward: {batch} images of captions but {len(references)} reference lists.")
        refs = []
        for item, image_refs in enumerate(references):
            image_refs = [self._reference(_text(r)) for r in image_refs if _text(r)]
            if not image_refs:
                raise ValueError(f"ScstReward: image {item} of the batch has no reference caption.")
            refs.extend([image_refs] * k)  # the same list for each of the image's k candidates
        candidates = self.candidates(ids, vocab)
        rewards = self.cider.score(candidates, refs)[1]
        if self.bleu_weight:
            rewards = (1.0 - self.bleu_weight) * rewards + self.bleu_weight * self.bleu4(candidates, refs)
        return rewards.reshape(batch, k).astype(np.float32)

    @staticmethod
    def bleu4(candidates, references):
        """Per-sentence BLEU-4 of each candidate (pycocoevalcap's `Bleu(4).compute_score(...)[1][3]`,
        without its printing), float64 (len(candidates),)."""
        from pycocoevalcap.bleu.bleu_scorer import BleuScorer

        scorer = BleuScorer(n=4)
        for candidate, refs in zip(candidates, references):
            scorer += (candidate, list(refs))
        return np.asarray(scorer.compute_score(option="closest", verbose=0)[1][3], dtype=np.float64)


# --------------------------------------------------------------------------------------------- step


class ScstStep:
    """One SCST training step on a batch: sample (XLA) -> reward (host) -> update (XLA).

    Args:
        model: a `Captioner`.
        apply_gradients: `apply_gradients(grads)` applies gradients for `model.trainable_variables` (the
            trainer passes its optimizer wrapper); it is called inside the compiled update, so it must be
            traceable (a Keras optimizer's `apply`, built beforehand, is).
        reward: a `ScstReward` (or any `reward(tokens (B, k, T), references, vocab) -> (B, k)`).
        num_samples: k captions per image (M2: 5).
        mode: as `sample_sequences` ("beam" = M2).
        max_steps: tokens per caption at most (M2: 20).
        jit_compile: XLA-compile both graph functions.
        seed: base seed of the sampling; the seed of step i is (seed, i), i = `self.iterations`, a
            tf.Variable a checkpoint can hold so a resumed run draws new samples.
        vocab: the `Vocabulary` the reward decodes with and whose special ids the samples and the
            teacher-forced pass use (keyword only).

        strategy: the tf.distribute strategy the model's variables live in (keyword only; default: the
            current one). Under several replicas (MirroredStrategy, MultiWorkerMirroredStrategy) each
            replica samples its share of the batch, the host scores its local replicas' samples, and the
            update all-reduces the gradients (each replica's loss divided by the replica count, so the
            sum is the global mean); the sampling and the gradients are compiled, the reduction is not.
        iterations: the step-count variable to use (keyword only; the trainer passes its own, so its
            checkpoint has one layout whatever the phase); default: a new one.
        scale_loss: `scale_loss(loss)`, the loss the gradients are taken of (keyword only): a
            `LossScaleOptimizer`'s `scale_loss` under mixed_float16, whose `apply` then unscales; default: as is.

    Batches must keep one shape (drop the remainder): each function is traced and compiled once.
    `step` returns python floats `loss`, `reward` (mean over samples) and `baseline` (mean).
    """

    def __init__(self, model, apply_gradients, reward, num_samples=5, mode="beam", max_steps=20,
                 jit_compile=True, seed=0, *, vocab, strategy=None, iterations=None, scale_loss=None):
        _check_mode(mode)
        _check_steps(model, max_steps)
        if mode == "multinomial" and num_samples < 2:
            raise ValueError("mode 'multinomial' (leave-one-out baseline) needs num_samples >= 2.")
        self.model, self.apply_gradients, self.reward, self.vocab = model, apply_gradients, reward, vocab
        self.special_ids = SpecialIds.of(vocab)
        self.num_samples, self.mode, self.max_steps = int(num_samples), mode, int(max_steps)
        self.seed = int(seed)
        self.scale_loss = scale_loss or (lambda loss: loss)
        self.strategy = strategy or tf.distribute.get_strategy()
        if iterations is None:
            with tf.init_scope():
                iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="scst_iterations")
        self.iterations = iterations
        self.sample_function = tf.function(self._sample, jit_compile=jit_compile)
        self.replicated = not is_single_device(self.strategy)
        if self.replicated:
            self._gradients = tf.function(self._loss_and_gradients, jit_compile=jit_compile)
            self.update_function = tf.function(self._replicated_update)
        else:  # one XLA cluster: loss, gradients and the optimizer's update
            self.update_function = tf.function(self._update, jit_compile=jit_compile)

    def _sample(self, image_inputs, seed):
        outputs = sample_sequences(self.model, image_inputs, self.num_samples, self.max_steps, self.mode, seed,
                                   special_ids=self.special_ids)
        outputs.pop("log_probs", None)  # recomputed with gradients by the update
        return outputs

    def _loss_and_gradients(self, image_inputs, tokens, rewards, greedy_rewards, loss_scale=1.0):
        with tf.GradientTape() as tape:
            log_probs, mask = sequence_log_probs(self.model, image_inputs, tokens, training=True,
                                                 special_ids=self.special_ids)
            baselines = baseline(rewards, self.mode, greedy_rewards)
            loss = scst_loss(log_probs, mask, rewards, baselines)
            scaled = self.scale_loss(loss * loss_scale)
        return loss, tf.reduce_mean(rewards), tf.reduce_mean(baselines), tape.gradient(
            scaled, self.model.trainable_variables)

    def _update(self, image_inputs, tokens, rewards, greedy_rewards):
        loss, mean_reward, mean_baseline, grads = self._loss_and_gradients(image_inputs, tokens, rewards, greedy_rewards)
        self.apply_gradients(grads)
        return loss, mean_reward, mean_baseline

    def _replicated_update(self, image_inputs, tokens, rewards, greedy_rewards):
        replicas = self.strategy.num_replicas_in_sync

        def replica_update(image_inputs, tokens, rewards, greedy_rewards):
            *means, grads = self._gradients(image_inputs, tokens, rewards, greedy_rewards, 1.0 / replicas)
            self.apply_gradients(grads)  # the optimizer sums the replicas' gradients
            return means

        per_replica = self.strategy.run(replica_update, args=(image_inputs, tokens, rewards, greedy_rewards))
        return [self.strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None) for value in per_replica]

    def _score(self, samples, captions):
        """Host: rewards (B, k) and greedy rewards (B,) of one replica's samples."""
        references = references_from_batch(captions)
        tokens = samples["tokens"].numpy()
        k = tokens.shape[1]
        if self.mode == "greedy_baseline":
            # The greedy caption is one more candidate of its image: one scoring call for both.
            both = np.concatenate([tokens, samples["greedy_tokens"].numpy()[:, None]], axis=1)
            scores = self.reward(both, references, self.vocab)
            return scores[:, :k].astype(np.float32), scores[:, k].astype(np.float32)
        return (np.asarray(self.reward(tokens, references, self.vocab), np.float32),
                np.zeros(tokens.shape[:1], np.float32))  # unused; keeps one signature

    def step(self, batch):
        """One update from `batch = {model.input_key: (B, ...), "captions": tf.string (B, N) padded with ""}`
        (under several replicas: a batch of the strategy's distributed dataset)."""
        seed = tf.constant([self.seed, int(self.iterations.numpy())], tf.int64)
        if self.replicated:
            strategy = self.strategy
            samples = strategy.run(self.sample_function, args=(batch[self.model.input_key], seed))
            local = [dict(zip(samples, values)) for values in zip(
                *(strategy.experimental_local_results(v) for v in samples.values()))]
            scored = [self._score(s, c) for s, c in zip(local, strategy.experimental_local_results(batch["captions"]))]

            def distribute(index):  # this worker's replicas, in the order of experimental_local_results
                return strategy.experimental_distribute_values_from_function(
                    lambda context: tf.constant(scored[context.replica_id_in_sync_group % len(scored)][index]))

            loss, mean_reward, mean_baseline = self.update_function(
                batch[self.model.input_key], samples["tokens"], distribute(0), distribute(1))
        else:
            image_inputs = tf.convert_to_tensor(batch[self.model.input_key])
            samples = self.sample_function(image_inputs, seed)
            rewards, greedy_rewards = self._score(samples, batch["captions"])
            loss, mean_reward, mean_baseline = self.update_function(
                image_inputs, samples["tokens"], tf.constant(rewards), tf.constant(greedy_rewards))
        self.iterations.assign_add(1)
        return {"loss": float(loss), "reward": float(mean_reward), "baseline": float(mean_baseline)}
