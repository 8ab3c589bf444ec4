"""What goes into and comes out of a captioner: image decoding/resizing and the tokenizer, with its special ids."""

import os

import keras
import numpy as np
import tensorflow as tf

from tfcaption.data.pipeline import RESAMPLE_METHODS, decode_image, decoder_inputs, resize_pixels, tokenize_captions
from tfcaption.data.tokenizer import SpecialIds, Vocabulary
from tfcaption.data.vocabulary import VOCABULARY_KINDS, build_vocabulary, load_vocabulary, vocabulary_class


def _png_floats(pixels):
    """uint8 pixels -> float32 in [0, 1], bit for bit what decoding their PNG gives (TensorFlow's PNG decoder
    reads 8-bit images as 16-bit for float output, so x * 257 / 65535, not x / 255)."""
    return tf.image.convert_image_dtype(tf.cast(pixels, tf.uint16) * 257, tf.float32)


@keras.saving.register_keras_serializable(package="tfcaption")
class CaptionerPreprocessor(keras.layers.Layer):
    """Images in, token ids in and out: image decoding and resizing, the tokenizer and its special ids.

    Pixel models read `"images"`: float32 (B, S, S, 3) values in [0, 255] (the image encoder applies its
    own normalisation). `preprocess_images` takes, on the host, paths, encoded bytes (PNG, JPEG, GIF, BMP;
    WebP and TIFF through Pillow), uint8 arrays (H, W[, 1|3|4]), float arrays in [0, 1] or [0, 255], a
    list of any of them, or one batch array / tensor (B, H, W, 3) (uint8, or float in [0, 255]); every
    path gives the pixels `tfcaption.data.pipeline.decode_image` gives the image's PNG, the decode used in
    training, evaluation and the export. Region models read `"features"`: (R, feature_dim) arrays, a list
    of them (zero-padded to the longest) or a (B, R, feature_dim) batch.

    The tokenizer is a word (`tokenizer="word"`, M2's) or WordPiece (`"wordpiece"`, needs tensorflow-text)
    vocabulary, or a BLIP checkpoint's `BertTokenizer` (`"bert"`: pad `[PAD]`, bos `[DEC]`, eos `[SEP]`;
    `detokenize` is its `decode`, transformers' `decode(skip_special_tokens=True)`). Its special ids
    (`pad_id`, `bos_id`, `eos_id`, together `special_ids`) are the tokenizer's: the model knows none of them
    (teacher-forced inputs carry a `"padding_mask"`, and decoding is given them).
    Without a vocabulary, `adapt(captions)` builds one. `preprocess_samples(images, captions)` is the
    tf.data function for training: strings to token rows `<bos> w1..wn <eos> <pad>...` of
    `max_caption_words + 2` ids.

    Args:
        vocabulary: a `Vocabulary`, its token list, a vocab.txt path, or None (build it with `adapt`).
        tokenizer: "word" or "wordpiece": how `vocabulary` tokens split text.
        input_key: "images" (pixels) or "features" (region features).
        image_size: the side (or (height, width)) images are resized to; pixel models only.
        feature_dim: values per region; region models only.
        max_caption_words: words (or pieces) kept per training caption.
        resample: "bilinear" (antialiased, tfcaption's decode) or "bicubic"
            (`tfcaption.data.pil_resize.bicubic_uint8_resize`, BLIP's image processor): how images are resized
            to `image_size`.
        **kwargs: `keras.layers.Layer` arguments.

    Example:
    >>> pre = CaptionerPreprocessor(["<unk>", "<pad>", "<bos>", "<eos>", "a", "circle"], image_size=8)
    >>> pre.tokenize(["A circle"]).numpy().tolist()[0][:4], (pre.pad_id, pre.bos_id, pre.eos_id)
    ([2, 4, 5, 3], (1, 2, 3))
    >>> single, pixels = pre.preprocess_images(np.zeros((16, 16, 3), np.uint8))
    >>> single, pixels.shape, pre.detokenize([[2, 4, 5, 3, 1]])
    (True, (1, 8, 8, 3), ['a circle'])
    """

    def __init__(self, vocabulary=None, tokenizer="word", input_key="images", image_size=None, feature_dim=None,
                 max_caption_words=25, resample="bilinear", **kwargs):
        super().__init__(**kwargs)
        if tokenizer not in VOCABULARY_KINDS:
            raise ValueError(f"tokenizer must be one of {VOCABULARY_KINDS}, got {tokenizer!r}.")
        if input_key not in ("images", "features"):
            raise ValueError(f"input_key must be 'images' or 'features', got {input_key!r}.")
        if resample not in RESAMPLE_METHODS:
            raise ValueError(f"resample must be one of {RESAMPLE_METHODS}, got {resample!r}.")
        if input_key == "images" and not image_size:
            raise ValueError("a pixel model's preprocessor needs image_size.")
        self.tokenizer = tokenizer
        self.input_key = input_key
        self.image_size = image_size
        self.feature_dim = feature_dim
        self.max_caption_words = int(max_caption_words)
        self.resample = resample
        self._vocabulary = None
        self.set_vocabulary(vocabulary)
        self.built = True

    # ---- the tokenizer -----------------------------------------------------------------------------

    @property
    def vocabulary(self):
        """The `Vocabulary` (or `WordPieceVocabulary`), or None before `adapt`."""
        return self._vocabulary

    def set_vocabulary(self, vocabulary):
        """Sets the vocabulary: a `Vocabulary` (or `BertTokenizer`), its token list, a vocab.txt path, a
        `BertTokenizer`'s config dict, or None."""
        if vocabulary is None or isinstance(vocabulary, (Vocabulary, vocabulary_class("bert"))):
            self._vocabulary = vocabulary
        elif isinstance(vocabulary, dict) and self.tokenizer == "bert":
            self._vocabulary = vocabulary_class("bert").from_config(vocabulary)
        elif isinstance(vocabulary, (str, os.PathLike)):
            self._vocabulary = load_vocabulary(os.fspath(vocabulary), self.tokenizer)
        else:
            self._vocabulary = vocabulary_class(self.tokenizer)(list(vocabulary))
        return self._vocabulary

    def _vocab(self):
        if self._vocabulary is None:
            raise ValueError("this preprocessor has no vocabulary yet: pass vocabulary=..., or call "
                             "adapt(captions) (fit on an (images, captions) dataset does it).")
        return self._vocabulary

    @property
    def vocabulary_size(self):
        return self._vocab().size

    def _tokenizer_ids(self):
        # Before `adapt`, the ids every vocabulary of this tokenizer kind gives its special tokens.
        return self._vocabulary or vocabulary_class(self.tokenizer)

    pad_id = property(lambda self: self._tokenizer_ids().pad_id, doc="<pad>: fills token rows after <eos>.")
    bos_id = property(lambda self: self._tokenizer_ids().bos_id, doc="<bos>: the first decoder input.")
    eos_id = property(lambda self: self._tokenizer_ids().eos_id,
                      doc="<eos>: ends a caption (generated, and counted).")

    @property
    def special_ids(self):
        """`SpecialIds(pad_id, bos_id, eos_id)` of the tokenizer: what decoding and the loss read."""
        return SpecialIds.of(self)

    def adapt(self, captions, min_count=1, max_size=None):
        """Builds the vocabulary from captions: an iterable of strings, or a tf.data.Dataset of strings or of
        `(images, captions)` elements (batched or not). Returns the vocabulary."""
        if isinstance(captions, tf.data.Dataset):
            dataset = captions
            if isinstance(dataset.element_spec, tuple):
                dataset = dataset.map(lambda *element: element[1])
            if getattr(dataset.element_spec, "dtype", None) != tf.string:
                raise ValueError("adapt reads caption strings: a dataset of strings or of (images, captions); "
                                 "token batches need the vocabulary they were made with (vocabulary=...).")
            captions = (c.decode("utf-8") for batch in dataset.as_numpy_iterator()
                        for c in np.asarray(batch).reshape(-1))
        return self.set_vocabulary(build_vocabulary(self.tokenizer, captions, min_count=min_count, max_size=max_size))

    def tokenize(self, captions):
        """Captions `tf.string [B]` -> int32 `[B, max_caption_words + 2]` token rows (graph-safe)."""
        return tokenize_captions(tf.convert_to_tensor(captions, tf.string), self._vocab(), self.max_caption_words)

    def detokenize(self, ids):
        """Token rows (any ints; <bos>/<pad> skipped, stops at <eos>) -> a list of caption strings."""
        vocab = self._vocab()
        return [vocab.decode(np.asarray(row).tolist()) for row in np.asarray(ids).reshape(len(ids), -1)]

    def prompt_ids(self, prompt, count=1):
        """A text prompt as the decoder continues it: int32 (P,) for one string, (count, P) for a list of
        `count` strings: the start token, then the prompt's tokens, no end token (BLIP's `[DEC] a picture of`,
        as transformers' `generate()` takes the processor's ids without `[CLS]`'s place and the last `[SEP]`).

        The BERT tokenizer spells any word (`[UNK]` where WordPiece cannot, as transformers does); the word and
        WordPiece vocabularies refuse a prompt with tokens they do not have (a ValueError naming them), since
        the model never saw `<unk>` start a caption. Prompts of a list must give the same number of tokens.
        """
        vocab = self._vocab()
        texts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not all(isinstance(text, str) for text in texts):
            raise ValueError(f"a prompt is a string or a list of strings, got {prompt!r}.")
        if not isinstance(prompt, str) and len(texts) != count:
            raise ValueError(f"{len(texts)} prompts for {count} images: give one prompt, or one per image.")
        rows = []
        for text in texts:
            ids = vocab.encode(text)
            if self.tokenizer != "bert" and vocab.unk_id in ids:
                unknown = [word for word in text.split() if vocab.unk_id in vocab.encode(word)]
                raise ValueError(f"the prompt {text!r} has words outside this model's vocabulary: "
                                 f"{', '.join(unknown) or text}.")
            rows.append([vocab.bos_id] + ids)
        if len({len(row) for row in rows}) > 1:
            raise ValueError(f"the prompts give {sorted({len(row) - 1 for row in rows})} tokens; prompts captioned "
                             "together need the same number (caption the others in another call).")
        ids = np.asarray(rows, np.int32)
        return ids[0] if isinstance(prompt, str) else ids

    # ---- images (host side, for generate) ---------------------------------------------------------

    def preprocess_images(self, images):
        """`(single, batch)`: whether one image (or feature array) was given, and the model's input batch
        (float32 numpy). Raises `tfcaption.inference.ImageError` naming an input that does not decode."""
        from tfcaption.inference import _feature_inputs

        if self.input_key == "features":
            if isinstance(images, tf.Tensor):
                images = images.numpy()
            return _feature_inputs(images)
        if isinstance(images, (tf.Tensor, np.ndarray)) and np.ndim(images) == 4:
            return False, self._pixel_batch(np.asarray(images))
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        return single, np.stack([self._one_image(item, i) for i, item in enumerate(items)])

    def _one_image(self, image, index):
        from tfcaption.inference import ImageError, checked_image_bytes

        if isinstance(image, (str, os.PathLike, bytes, bytearray)):
            name = os.fspath(image) if isinstance(image, (str, os.PathLike)) else f"image {index}"
            return self._decode(tf.constant(checked_image_bytes(image, name))).numpy()
        array = np.asarray(image.numpy() if isinstance(image, tf.Tensor) else image)
        if array.ndim == 2:
            array = array[..., None]
        if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
            raise ImageError(f"image {index}: array of shape {array.shape} is not an image (H, W[, 1|3|4])")
        if array.dtype != np.uint8:  # as tfcaption.load reads float arrays: [0, 1] or [0, 255]
            scale = 255.0 if array.max() <= 1.0 else 1.0
            array = np.clip(array * scale, 0, 255).astype(np.uint8)
        rgb = np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array[..., :3]
        return resize_pixels(_png_floats(rgb), self.image_size, self.resample).numpy()

    def _pixel_batch(self, batch):
        if batch.shape[-1] != 3:
            raise ValueError(f"a batch of images must be (B, H, W, 3), got {batch.shape}.")
        return self.pixels(tf.constant(batch)).numpy()

    # ---- tf.data --------------------------------------------------------------------------------

    def _decode(self, data):
        """One encoded image -> float32 (S, S, 3) in [0, 255], resized with `resample`."""
        return decode_image(data, self.image_size, self.resample)

    def pixels(self, images):
        """Graph-safe: encoded `tf.string` images (a batch `[B]` or one) or pixels (uint8, or float in
        [0, 255]; `[B, H, W, 3]` or one image) -> float32 pixels at the model's size, in [0, 255]."""
        images = tf.convert_to_tensor(images)
        if images.dtype == tf.string:
            if images.shape.rank == 0:
                return self._decode(images)
            return tf.map_fn(self._decode, images, fn_output_signature=tf.float32)
        if images.dtype == tf.uint8:
            return resize_pixels(_png_floats(images), self.image_size, self.resample)
        return resize_pixels(tf.cast(images, tf.float32) / 255.0, self.image_size, self.resample)

    def preprocess_samples(self, images, captions):
        """The tf.data map for training: `(images, captions)` (batched or one) -> `(x, y)` with
        `x = {input_key: pixels or features, "tokens": rows[..., :-1], "padding_mask": rows[..., :-1] != pad_id}`
        and `y = rows[..., 1:]`."""
        captions = tf.convert_to_tensor(captions, tf.string)
        one = captions.shape.rank == 0
        tokens = self.tokenize(tf.reshape(captions, [-1]))
        tokens = tokens[0] if one else tokens
        inputs = tf.cast(images, tf.float32) if self.input_key == "features" else self.pixels(images)
        return {self.input_key: inputs, **decoder_inputs(tokens, self.pad_id)}, tokens[..., 1:]

    def get_config(self):
        config = super().get_config()
        vocab = self._vocabulary
        # a BertTokenizer keeps its settings (lower-casing, special tokens) beside its tokens
        tokens = getattr(vocab, "tokens", None)
        if self.tokenizer == "bert" and vocab is not None:
            tokens = vocab.get_config()
        config.update(vocabulary=tokens, tokenizer=self.tokenizer, input_key=self.input_key,
                      image_size=self.image_size, feature_dim=self.feature_dim,
                      max_caption_words=self.max_caption_words, resample=self.resample)
        return config
