"""The tf.data input pipelines: image decoding, caption tokenisation, batching -- no Python per example.

One image decode path (:func:`decode_image`) is shared by training, evaluation and the exported
SavedModel, so a model never sees pixels prepared differently at serving time than in training.

Undecodable images (truncated files, non-image blobs) must never stop a run. Decoding is wrapped so a
decode error drops *that image only*: records are decoded inside small per-element datasets (one record,
or a chunk of 16 pairs) ending in ``ignore_errors``, rather than putting ``ignore_errors`` on the main
stream, where it would also swallow a corrupt TFRecord shard (``DataLossError``) and silently train on
part of the data. :func:`count_undecodable` reports how many images were (or will be) skipped, so
trainers and evaluators can say so.

Captions are tokenised per batch (vectorised string ops + one StringLookup call), never in Python.

Datasets of precomputed region features (manifest ``inputs.kind == "features"``, see
:func:`tfcaption.data.records.input_kind`) go through the same pipelines, decided from the manifest:
their batches carry ``"features": float32 [B, R, D]`` (:func:`decode_features`, all-zero rows are
padding) where image datasets carry ``"images"``; ``image_size`` is ignored, and so is the flip
augmentation. Their rows were checked at preparation, so nothing is dropped: a record that does not
decode is an error.
"""

from __future__ import annotations

import random
from typing import Optional, Sequence, Union

import tensorflow as tf

from tfcaption.data.pil_resize import bicubic_uint8_resize
from tfcaption.data.records import InputKind, dataset_input_kind, read_records
from tfcaption.data.tokenizer import Vocabulary

__all__ = [
    "decode_image",
    "resize_pixels",
    "decode_features",
    "tokenize_captions",
    "decoder_inputs",
    "train_dataset",
    "eval_dataset",
    "count_undecodable",
    "image_hw",
    "default_shuffle_buffer",
]

ImageSize = Union[int, Sequence[int]]

# Images above this many pixels are refused by dataset preparation and by the serving signature, by
# their header, before decoding: far above any captioning photo, below sizes that make a decoder
# allocate gigabytes.
DEFAULT_MAX_PIXELS = 40_000_000

# How images are resized to the model's size: "bilinear" (antialiased: tfcaption's own) or "bicubic" (PIL's
# bicubic on uint8: BLIP's image processor, for imported checkpoints); the image encoder says which.
RESAMPLE_METHODS = ("bilinear", "bicubic")

# The encoded shuffle buffer's default: 10,000 images, or as many region-feature records as fit in this
# many bytes (M2's 50 x 2048 float32 rows are 400 KB an image: 10,000 of them would be 4 GB).
SHUFFLE_IMAGES = 10000
SHUFFLE_BYTES = 512 * 2**20


def image_hw(image_size: ImageSize) -> tuple[int, int]:
    """``(height, width)`` of an image size given as one side or as a ``(height, width)`` pair."""
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def _decode_pixels(image_bytes: tf.Tensor) -> tf.Tensor:
    """The decoding step of :func:`decode_image` (the only step that can fail): float32 [H, W, 3] in [0, 1]."""
    return tf.io.decode_image(image_bytes, channels=3, dtype=tf.float32, expand_animations=False)


def decode_image(image_bytes: tf.Tensor, image_size: ImageSize, resample: str = "bilinear") -> tf.Tensor:
    """Encoded image bytes (PNG, JPEG, GIF, BMP) -> ``float32 [S, S, 3]`` pixel values in ``[0, 255]``.

    Grayscale is replicated to RGB, alpha is dropped, an animated GIF gives its first frame. Pixels are
    converted to float with ``decode_image(dtype=float32)`` (``convert_image_dtype`` semantics: divide by
    the dtype's maximum), which is what makes 16-bit PNGs come out in range, then resized
    (:func:`resize_pixels`: by default with antialiasing, since a plain bilinear downscale aliases badly on
    thin strokes) and scaled to [0, 255]. The model's image encoder applies its own normalisation
    (``x / 127.5 - 1`` for patches and ViT, the keras.applications scaling for CNN backbones), so the data
    path is the same for every encoder.

    Args:
        image_bytes: scalar ``tf.string`` with the encoded file.
        image_size: output side ``S`` (or ``(height, width)``).
        resample: ``"bilinear"`` or ``"bicubic"`` (``RESAMPLE_METHODS``; the image encoder's ``resample``).

    Raises:
        tf.errors.InvalidArgumentError: when the bytes are not a decodable image (at run time).
    """
    return resize_pixels(_decode_pixels(image_bytes), image_size, resample)


def resize_pixels(image, image_size: ImageSize, resample: str = "bilinear") -> tf.Tensor:
    """:func:`decode_image`'s steps after the decode, for pixels that come as arrays: float32 values in
    [0, 1] (H, W, 3) or (B, H, W, 3) -> float32 in [0, 255] at the model's size (antialiased bilinear
    resize; skipped at that size, where it is the identity but costs more than the PNG decode itself,
    docs/results.md). ``resample="bicubic"``: :func:`tfcaption.data.pil_resize.bicubic_uint8_resize`
    (BLIP's image processor) instead."""
    if resample not in RESAMPLE_METHODS:
        raise ValueError(f"resample must be one of {RESAMPLE_METHODS}, got {resample!r}.")
    height, width = image_hw(image_size)
    same_size = tf.reduce_all(tf.equal(tf.shape(image)[-3:-1], [height, width]))
    if resample == "bicubic":
        image = tf.cond(same_size, lambda: tf.round(image * 255.0),
                        lambda: bicubic_uint8_resize(image, [height, width]))
        return tf.ensure_shape(image, image.shape[:-3] + [height, width, 3])
    image = tf.cond(same_size, lambda: image,
                    lambda: tf.image.resize(image, [height, width], method="bilinear", antialias=True))
    image = tf.clip_by_value(image * 255.0, 0.0, 255.0)
    return tf.ensure_shape(image, image.shape[:-3] + [height, width, 3])


def decode_features(data: tf.Tensor, feature_dim: int, max_regions: int) -> tf.Tensor:
    """Stored region features (float32 bytes of ``(n, D)``, ``n <= R``) -> ``float32 [R, D]``, zero-padded.

    Args:
        data: scalar ``tf.string``, the ``features`` field of a record (little-endian float32).
        feature_dim: ``D``, values per region (the manifest's ``inputs.feature_dim``).
        max_regions: ``R``, rows after padding (the manifest's ``inputs.max_regions``).

    Raises:
        tf.errors.InvalidArgumentError: bytes that are not whole rows of ``D`` values, or more than ``R``
            rows (at run time; preparation never writes either).
    """
    rows = tf.reshape(tf.io.decode_raw(data, tf.float32), [-1, feature_dim])
    padded = tf.pad(rows, [[0, max_regions - tf.shape(rows)[0]], [0, 0]])
    return tf.ensure_shape(padded, [max_regions, feature_dim])


def default_shuffle_buffer(inputs: InputKind) -> int:
    """Encoded examples :func:`train_dataset` shuffles over by default: ``SHUFFLE_IMAGES`` images, or
    the region-feature records that fit in ``SHUFFLE_BYTES`` (at least 256)."""
    if inputs.kind != "features":
        return SHUFFLE_IMAGES
    per_example = 4 * inputs.feature_dim * inputs.max_regions
    return int(min(SHUFFLE_IMAGES, max(256, SHUFFLE_BYTES // per_example)))


def _input_decoder(inputs: InputKind, image_size: ImageSize, resample: str = "bilinear"):
    """``(record field, batch key, decode fn, map-and-drop fn)`` for a dataset's kind of inputs."""
    if inputs.kind == "features":
        def map_all(ds, fn, chunk=1):  # nothing to drop: a bad record must stop the run
            return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

        return ("features", "features",
                lambda data: decode_features(data, inputs.feature_dim, inputs.max_regions), map_all)
    return "image", "images", lambda data: decode_image(data, image_size, resample), _decode_or_drop


def tokenize_captions(captions: tf.Tensor, vocab: Vocabulary, max_length: int,
                      flip: Optional[tf.Tensor] = None) -> tf.Tensor:
    """Raw captions ``tf.string [B]`` -> ``int32 [B, max_length + 2]``: ``<bos> w1..wn <eos> <pad>...``.

    Normalises and looks up with ``vocab.ids_tf`` (for the word vocabulary: like
    :func:`~tfcaption.data.tokenizer.normalize_caption_tf`; ids are words, or subword pieces with a
    :class:`~tfcaption.data.wordpiece.WordPieceVocabulary`), keeps the first ``max_length`` ids (the row
    still ends with ``<eos>``), and where ``flip[b]`` is true swaps the words "left" and "right" before
    they are looked up. Works on a whole batch at once, because vectorised over the batch it costs less
    CPU per caption than tokenising captions one by one in tf.data.
    """
    captions = tf.convert_to_tensor(captions, tf.string)
    ids = vocab.ids_tf(captions, flip)[:, :max_length]  # ragged [B, None]
    n = tf.shape(captions)[0]
    ids = tf.concat([tf.fill([n, 1], vocab.bos_id), ids, tf.fill([n, 1], vocab.eos_id)], axis=1)
    # The static batch size (when known, e.g. drop_remainder=True) is kept for XLA.
    return ids.to_tensor(default_value=vocab.pad_id, shape=[captions.shape[0], max_length + 2])


def decoder_inputs(tokens, pad_id: int) -> dict:
    """The teacher-forced decoder inputs of token rows ``<bos> w1..wn <eos> <pad>...`` (``[..., T + 1]``, as
    :func:`tokenize_captions` makes them; the targets are ``tokens[..., 1:]``): ``"tokens"``, every id but
    the last, and ``"padding_mask"``, False where that id is the tokenizer's ``pad_id`` (the backbone knows
    no token id, so padding is marked here).

    Example:
        >>> inputs = decoder_inputs(tf.constant([[2, 4, 3, 1, 1]]), pad_id=1)
        >>> inputs["tokens"].numpy().tolist(), inputs["padding_mask"].numpy().tolist()
        ([[2, 4, 3, 1]], [[True, True, True, False]])
    """
    tokens = tf.convert_to_tensor(tokens)[..., :-1]
    return {"tokens": tokens, "padding_mask": tf.not_equal(tokens, tf.cast(pad_id, tokens.dtype))}


def _decode_or_drop(ds: tf.data.Dataset, fn, chunk: int = 1) -> tf.data.Dataset:
    """``ds.map(fn)`` in parallel, dropping the elements where ``fn`` fails, without ignoring errors
    raised upstream in ``ds``.

    Elements are mapped inside small datasets of ``chunk`` elements each followed by ``ignore_errors``,
    so only errors raised by ``fn`` itself (the image decode) are dropped and logged; a failure reading
    the shards upstream still stops the run. Output order equals input order (deterministic).
    ``chunk > 1`` (elements must then batch, i.e. have fixed shapes) amortises the per-dataset cost,
    which brings it close to an unconfined ``map().ignore_errors()`` (the throughputs:
    docs/results.md, "Input pipeline").
    """
    if chunk > 1:
        ds = ds.batch(chunk)

    def inner(*element):  # interleave unpacks tuple elements into arguments: pack them again
        element = element[0] if len(element) == 1 else element
        small = (tf.data.Dataset.from_tensor_slices(element) if chunk > 1
                 else tf.data.Dataset.from_tensors(element))
        return small.map(fn).ignore_errors(log_warning=True)

    return ds.interleave(inner, cycle_length=tf.data.AUTOTUNE, block_length=max(chunk, 1),
                         num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def train_dataset(data_dir: str, split: str, vocab: Vocabulary, batch_size: int, max_length: int,
                  image_size: ImageSize, seed: Optional[int] = 0, augment_flip: bool = False,
                  shuffle_buffer: Optional[int] = None, repeat: bool = False,
                  drop_remainder: bool = True, decode_once: bool = True,
                  decoded_shuffle_buffer: int = 1000, captions_per_image: int = 1,
                  resample: str = "bilinear") -> tf.data.Dataset:
    """Training batches, one element per (image, caption) pair, or per image with k of its captions.

    Default pipeline (``decode_once=True``): shards (file order shuffled) -> shuffle ``shuffle_buffer``
    encoded *images* (``seed``, reshuffled every epoch) -> [repeat] -> decode each image once, in
    parallel, dropping undecodable ones -> one pair per caption (the pairs of an image share one decoded
    tensor) -> shuffle ``decoded_shuffle_buffer`` decoded *pairs* -> [flip] -> batch -> tokenise the
    batch -> prefetch.

    ``decode_once=False``: one (image bytes, caption) pair per caption first -> shuffle
    ``shuffle_buffer`` *pairs* -> [repeat] -> decode every pair's image -> batch -> tokenise. Pairs are
    shuffled uniformly over the whole buffer (with ``decode_once`` the captions of one image are only
    spread over ~``decoded_shuffle_buffer`` positions), at the price of decoding each image once per
    caption.

    ``decode_once=True`` is the default because decoding dominates the cost of a photo: small PNGs cost
    about the same either way, but a 640x480 JPEG decoded once per caption costs several times the CPU
    per pair (measured: docs/results.md, "Input pipeline"). Memory: the encoded buffer holds
    ``shuffle_buffer`` files; the decoded one ~``decoded_shuffle_buffer / captions per image`` float32
    images (about 22 MB at 96x96, 120 MB at 224x224 with the defaults and 5 captions).

    Region features (a dataset whose manifest says ``"features"``): the same pipeline, each record's
    rows zero-padded to ``[R, D]`` where images are decoded, batches keyed ``"features"``, ``image_size``
    and ``augment_flip`` ignored. Memory: a shuffle buffer entry is an image's stored rows (about
    400 KB for 50 regions of 2048 values), so the default buffer (:func:`default_shuffle_buffer`) holds
    as many as fit in 512 MB (1,310 of those) instead of 10,000.

    ``captions_per_image`` k > 1 (ruotianluo's ``seq_per_img``): one element per image, decoded once,
    with k of its captions drawn without replacement (cycling through them when it has fewer than k),
    after the encoded shuffle (there is no pair shuffle); ``batch_size`` counts images, and ``tokens``
    is ``[B, k, max_length + 2]``. The model then encodes each image once for its k captions.

    Flip augmentation: with probability 0.5 per pair (per image with ``captions_per_image`` > 1, all of its
    captions swapped with it), the image is mirrored left-right and the caption's
    words "left" and "right" are swapped (before the words are looked up). The coin is
    ``tf.random.stateless_uniform`` seeded by a ``Dataset.random(seed)`` stream zipped onto the pairs
    before the parallel map, so the whole stream (order and flips) is a deterministic function of
    ``seed``, independent of parallelism and of dropped images, and differs from epoch to epoch.

    Args:
        data_dir, split: where the shards are (see :func:`tfcaption.data.records.read_records`).
        vocab: the :class:`~tfcaption.data.tokenizer.Vocabulary`.
        batch_size: pairs per batch.
        max_length: maximum number of words; ``tokens`` has ``max_length + 2`` columns.
        image_size: output image side (ignored for region features).
        seed: shuffle and augmentation seed (``None``: a random one).
        augment_flip: enable the left-right flip augmentation (ignored for region features: they were
            computed from the unflipped image, so swapping "left" and "right" alone would mislabel it).
        shuffle_buffer: encoded shuffle buffer size (images; pairs without ``decode_once``);
            <= 1 disables it; None: :func:`default_shuffle_buffer` of the dataset.
        repeat: repeat forever (each pass reshuffled).
        drop_remainder: drop the last incomplete batch (static batch size, needed by XLA / TPU).
        decode_once: decode each image once for all its captions (see above).
        decoded_shuffle_buffer: decoded-pair shuffle buffer used with ``decode_once``; <= 1 disables it.
        captions_per_image: k captions per element (see above); 1 = pairs.
        resample: how images are resized (:func:`decode_image`; the image encoder's ``resample``).

    Returns:
        ``tf.data.Dataset`` of ``{"images": float32 [B, S, S, 3], "tokens": int32 [B, max_length + 2]}``
        (``[B, k, max_length + 2]`` with k captions per image), for region features
        ``{"features": float32 [B, R, D], "tokens": ...}``.

    Example:
        >>> import tempfile
        >>> from tfcaption.data.records import write_shards
        >>> png = tf.io.encode_png(tf.zeros((40, 40, 3), tf.uint8)).numpy()
        >>> vocab = Vocabulary.build(["a red circle"])
        >>> with tempfile.TemporaryDirectory() as data_dir:
        ...     _ = write_shards([{"image_id": "1", "image": png, "captions": ["a red circle", "a circle"]}],
        ...                      data_dir, "train", 1)
        ...     ds = train_dataset(data_dir, "train", vocab, batch_size=2, max_length=20, image_size=96)
        ...     batch = next(iter(ds))
        >>> batch["images"].shape, batch["tokens"].shape
        (TensorShape([2, 96, 96, 3]), TensorShape([2, 22]))
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    k = int(captions_per_image)
    if k < 1 or (k > 1 and not decode_once):
        raise ValueError(f"captions_per_image must be >= 1 (and > 1 only with decode_once), got {k}.")
    if seed is None:  # a seed is needed for the stateless flips; draw one (the run is then not repeatable)
        seed = random.SystemRandom().randrange(2**31)
    seed = int(seed)
    vocab.ids_tf(tf.constant([""]))  # build the lookup table (or WordPiece model) eagerly, outside the traced maps
    inputs = dataset_input_kind(data_dir)
    field, key, decode, decode_or_drop = _input_decoder(inputs, image_size, resample)
    if shuffle_buffer is None:
        shuffle_buffer = default_shuffle_buffer(inputs)
    augment_flip = augment_flip and key == "images"
    records = read_records(data_dir, split, shuffle_files=True, seed=seed)

    def with_coins(ds):
        """Attach a per-element int64 seed for the flip coin (a constant when flipping is off)."""
        if augment_flip or k > 1:  # k > 1: the coin also picks the image's captions
            coins = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        else:
            coins = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).repeat()
        return tf.data.Dataset.zip(ds, coins)

    def finish(image, caption, coin_seed):
        """Per pair: flip the image if the coin says so; the caption is tokenised per batch below."""
        if not augment_flip:
            return {key: image, "caption": caption}
        u = tf.random.stateless_uniform([], seed=tf.stack([coin_seed, tf.constant(seed, tf.int64)]))
        flip = u < 0.5
        image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
        return {key: image, "caption": caption, "flip": flip}

    def tokenize(batch):
        if k == 1:
            return {key: batch[key], "tokens": tokenize_captions(batch["caption"], vocab, max_length,
                                                                 flip=batch.get("flip"))}
        flip = batch.get("flip")
        tokens = tokenize_captions(tf.reshape(batch["caption"], [-1]), vocab, max_length,
                                   flip=None if flip is None else tf.repeat(flip, k))
        return {key: batch[key], "tokens": tf.reshape(tokens, [-1, k, max_length + 2])}

    def pick_captions(element, coin_seed):
        """k of the image's captions in a seeded random order, cycling when it has fewer than k."""
        captions = element["captions"]
        pick_seed = tf.stack([coin_seed, tf.constant(seed + 2, tf.int64)])
        order = tf.argsort(tf.random.stateless_uniform(tf.shape(captions), seed=pick_seed))
        chosen = tf.gather(captions, tf.gather(order, tf.range(k) % tf.shape(captions)[0]))
        return finish(element["image"], tf.ensure_shape(chosen, [k]), coin_seed)

    if not decode_once:
        def to_pairs(record):
            captions = record["captions"]
            return {"image": tf.fill(tf.shape(captions), record[field]), "caption": captions}

        pairs = records.map(to_pairs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()
        if shuffle_buffer and shuffle_buffer > 1:
            pairs = pairs.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            pairs = pairs.repeat()
        ds = decode_or_drop(
            with_coins(pairs), lambda pair, coin: finish(decode(pair["image"]), pair["caption"], coin), chunk=16)
    else:
        if shuffle_buffer and shuffle_buffer > 1:
            records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            records = records.repeat()
        images = decode_or_drop(records, lambda r: {"image": decode(r[field]), "captions": r["captions"]})

        def to_pairs(element):
            # from_tensors(...).repeat() hands out the same tensor for every caption: no copies.
            return tf.data.Dataset.zip(tf.data.Dataset.from_tensors(element["image"]).repeat(),
                                       tf.data.Dataset.from_tensor_slices(element["captions"]))

        if k > 1:  # the image's captions stay together: nothing to spread over a pair buffer
            ds = with_coins(images).map(pick_captions, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        else:
            pairs = images.flat_map(to_pairs)
            if decoded_shuffle_buffer and decoded_shuffle_buffer > 1:
                pairs = pairs.shuffle(decoded_shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True)
            ds = with_coins(pairs).map(lambda pair, coin: finish(pair[0], pair[1], coin),
                                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=tf.data.AUTOTUNE,
                  deterministic=True)
    ds = ds.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(data_dir: str, split: str, batch_size: int, image_size: ImageSize,
                 resample: str = "bilinear") -> tf.data.Dataset:
    """Evaluation batches, one element per image, in shard order, last partial batch kept.

    Undecodable images are skipped (see :func:`count_undecodable` for how many).

    Args:
        data_dir, split: where the shards are (see :func:`tfcaption.data.records.read_records`).
        batch_size: images per batch.
        image_size: output image side (ignored for region features).
        resample: how images are resized (:func:`decode_image`; the image encoder's ``resample``).

    Returns:
        ``tf.data.Dataset`` of ``{"image_id": tf.string [B], "images": float32 [B, S, S, 3],
        "captions": tf.string [B, N] (padded with ""), "scene": tf.string [B]}``; for region features
        ``"features": float32 [B, R, D]`` in place of ``"images"``.
    """
    return image_batches(data_dir, split, batch_size, image_size, resample=resample)


def image_batches(data_dir: str, split: str, batch_size: int, image_size: ImageSize, seed: Optional[int] = None,
                  drop_remainder: bool = False, resample: str = "bilinear") -> tf.data.Dataset:
    """Batches of images with all their reference captions (:func:`eval_dataset`'s elements).

    With ``seed`` the images are shuffled (shard order, then :func:`default_shuffle_buffer` encoded
    images, reshuffled every pass), the training order of self-critical sequence training, whose reward
    needs every reference of an image; without, shard order. ``drop_remainder`` keeps every batch the
    same size (static shapes for XLA).
    """
    inputs = dataset_input_kind(data_dir)
    field, key, decode, decode_or_drop = _input_decoder(inputs, image_size, resample)
    records = read_records(data_dir, split, shuffle_files=seed is not None, seed=seed)
    if seed is not None:
        records = records.shuffle(default_shuffle_buffer(inputs), seed=seed, reshuffle_each_iteration=True)

    def prepare(record):
        return {
            "image_id": record["image_id"],
            key: decode(record[field]),
            "captions": record["captions"],
            "scene": record["scene"],
        }

    ds = decode_or_drop(records, prepare)
    ds = ds.padded_batch(batch_size, drop_remainder=drop_remainder)  # strings pad with ""
    return ds.prefetch(tf.data.AUTOTUNE)


def count_undecodable(data_dir: str, split: str) -> tuple[int, list[str]]:
    """How many images of ``split`` cannot be decoded, and their ids (in shard order).

    One pass over the shards: each record yields ``(image_id, ok)``, where ``ok`` is produced by a
    one-element dataset that decodes the image and, when decoding fails, falls through to a
    ``(image_id, False)`` fallback. It runs the decoding step of :func:`decode_image` (resizing cannot
    fail on a decoded image, and an empty one counts as undecodable), so the count is what training and
    evaluation skip. Costs one decode of every image (docs/results.md, "Input pipeline").
    A region-features dataset has nothing to decode: ``(0, [])`` without reading it.
    """
    if dataset_input_kind(data_dir).kind == "features":
        return 0, []
    records = read_records(data_dir, split)

    def check(record):
        image_id = record["image_id"]
        decoded = tf.data.Dataset.from_tensors(record["image"]).map(
            # The flag depends on the decoded size, so the decode cannot be optimised away.
            lambda b: (image_id, tf.size(_decode_pixels(b)) > 0)).ignore_errors()
        fallback = tf.data.Dataset.from_tensors((image_id, tf.constant(False)))
        return decoded.concatenate(fallback).take(1)

    flags = records.interleave(check, cycle_length=tf.data.AUTOTUNE, block_length=1,
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    bad = []
    for ids, oks in flags.batch(1024).as_numpy_iterator():
        bad.extend(i.decode("utf-8") for i, ok in zip(ids, oks) if not ok)
    return len(bad), bad
