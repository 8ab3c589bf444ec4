"""Running a LiteRT (`model.tflite`) or ONNX (`model.onnx`) export from Python: what `tfcaption.load` and
`tfcaption-caption --model FILE` use.

Each image is decoded and resized with the SavedModel's own TensorFlow ops (`portable.image_pixels`), fed
as uint8 [1, H, W, 3] to ai-edge-litert's interpreter or an ONNX Runtime session, and its best beam's
tokens are detokenised with the `vocab.txt` beside the file. The decoding (greedy, beam size or a random
sampler's settings, and the caption length) is fixed in the file: a request for another is refused in one
line, never silently ignored; a sampling file takes the caller's seed.

A region-feature file takes each image's features instead, (n, D) float32 with n <= R (the regions fixed at
export), zero-padded to [1, R, D] here (`feature_input`), as `tfcaption.load(...).caption(arrays)` and
`tfcaption-caption --features FILE.h5 --model model.tflite` give them.
"""

import os

import numpy as np

from tfcaption.data.vocabulary import load_vocabulary
from tfcaption.export.portable import FEATURES_NAME, INPUT_NAME, image_pixels, read_metadata

SUFFIXES = {".tflite": "litert", ".onnx": "onnx"}
EXTRAS = {"litert": ("ai_edge_litert", "litert"), "onnx": ("onnxruntime", "onnx")}


def portable_format(path):
    """"litert" or "onnx" for a path to such a file, else None."""
    return SUFFIXES.get(os.path.splitext(os.fspath(path))[1].lower())


def _litert_runner(path):
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=path).get_signature_runner()
    return lambda feed: runner(**feed)


def _onnx_runner(path):
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return lambda feed: dict(zip(names, session.run(names, feed)))


def _decoding_of(sampler):
    """(name, config without the seed, seed) of a sampler: the decoding a file records in its metadata, and the seed."""
    from tfcaption import samplers

    sampler = samplers.get(sampler)
    name = samplers.name_of(sampler)
    config = {key: value for key, value in sampler.get_config().items() if key != "seed"}
    return name, config, getattr(sampler, "seed", None)


def _checked_request(path, metadata, beam_size, sampler):
    """The seed a caller's sampler asks for (None: a new draw per call), or a one-line ValueError when the
    caller's beam size or sampler is not the decoding fixed in the file."""
    fixed = metadata["sampler"]
    if fixed in ("greedy", "beam", "generate_beam"):
        from tfcaption import samplers

        def search(k):  # the file's search (M2's or transformers' beam search) with k beams
            return samplers.GreedySampler() if k == 1 else samplers.get(
                "beam" if fixed == "greedy" else fixed, num_beams=k)

        expected = search(metadata["beam_size"])
        wanted = expected if sampler is None else samplers.get(sampler)
        if beam_size is not None and sampler is None:
            wanted = search(int(beam_size))
        if _decoding_of(wanted)[:2] != _decoding_of(expected)[:2]:
            got = (f"beam size {wanted.num_beams}" if hasattr(wanted, "num_beams") else
                   "beam size 1" if isinstance(wanted, samplers.GreedySampler) else type(wanted).__name__)
            raise ValueError(f"{path} decodes with beam size {metadata['beam_size']}, fixed at export; got {got} "
                             "(re-export with tfcaption-export --beam-size or --sampler).")
        return None
    expected = (fixed, {k: v for k, v in metadata["sampler_config"].items() if k != "seed"})
    if beam_size is not None or (sampler is not None and _decoding_of(sampler)[:2] != expected):
        raise ValueError(f"{path} samples with {fixed} {expected[1]}, fixed at export; give only --seed (re-export "
                         "with tfcaption-export --sampler for other settings).")
    return None if sampler is None else _decoding_of(sampler)[2]


def file_sampler(path, seed):
    """The random sampler recorded in the metadata of the sampling file `path`, with `seed`; a ValueError for a
    file that searches (its decoding takes no seed)."""
    from tfcaption import samplers

    metadata = read_metadata(path)
    if "seed" not in metadata:
        raise ValueError(f"--seed: {path} decodes with {metadata['sampler']} search, which takes no seed.")
    return samplers.NAMES[metadata["sampler"]](**{**metadata["sampler_config"], "seed": seed})


def feature_input(path, features, regions, feature_dim):
    """One image's region features (n, D) as the file's float32 [1, R, D] input: zero rows appended up to R;
    trailing zero rows beyond R (a batch's padding) dropped; a ValueError when D differs or more than R rows
    hold values."""
    features = np.asarray(features, np.float32)
    if features.ndim != 2 or features.shape[1] != feature_dim:
        raise ValueError(f"{path} takes region features (regions, {feature_dim}); got shape {features.shape}.")
    used = len(features)
    while used > regions and not features[used - 1].any():
        used -= 1
    if used > regions:
        raise ValueError(f"{path} takes at most {regions} regions per image, fixed at export; got {used} (re-export "
                         "with tfcaption-export --regions).")
    padded = np.zeros((1, regions, feature_dim), np.float32)
    padded[0, :used] = features[:used]
    return padded


class PortableBackend:
    """A `CaptionPredictor` backend over a .tflite or .onnx file and the metadata.json / vocab.txt beside it."""

    def __init__(self, path, beam_size=None, sampler=None, max_length=None):
        self.path = os.fspath(path)
        self.format = portable_format(self.path)
        self.metadata = metadata = read_metadata(self.path)
        fixed_steps = metadata["max_steps"]
        self.seed = _checked_request(self.path, metadata, beam_size, sampler)
        if max_length and int(max_length) != fixed_steps:
            raise ValueError(f"{self.path} decodes {fixed_steps} tokens, fixed at export; got a caption length of "
                             f"{max_length} (re-export with tfcaption-export --max-steps).")
        module, extra = EXTRAS[self.format]
        try:
            self._run = (_litert_runner if self.format == "litert" else _onnx_runner)(self.path)
        except ImportError:
            raise ImportError(f"{self.path}: running {self.format} files needs {module}: pip install "
                              f"'tfcaption[{extra}]'") from None
        directory = os.path.dirname(os.path.abspath(self.path))
        self.vocab = load_vocabulary(os.path.join(directory, metadata["vocab"]), metadata["tokenizer"])
        if metadata["input"]["name"] == FEATURES_NAME:
            self.input_key, self.image_size = "features", None
            _, self.regions, self.feature_dim = metadata["input"]["shape"]
        else:
            self.input_key, self.image_size = "images", tuple(metadata["image_size"])
            self.resample = metadata.get("resample", "bilinear")

    def _input(self, data):
        if self.input_key == "features":
            return {FEATURES_NAME: feature_input(self.path, data, self.regions, self.feature_dim)}
        return {INPUT_NAME: image_pixels(data, self.image_size, self.resample)[None]}

    def tokens(self, data, seed=None):
        """The file's outputs for one encoded image (a region-feature file: one image's features (n, D)):
        `tokens` int32 [k, T] and `scores` float32 [k]. A sampling file draws with `seed` (else the caller's
        sampler's seed, else a new one)."""
        feed = self._input(data)
        if "seed" in self.metadata:
            seed = self.seed if seed is None else seed
            if seed is None:  # as the samplers do without a seed: a new draw on every call
                seed = np.random.randint(0, 2**31 - 1)
            if not -2**31 <= int(seed) < 2**31:
                raise ValueError(f"{self.path}: a LiteRT file's seed is an int32, got {seed}.")
            feed["seed"] = np.array([seed], np.int32)
        outputs = self._run(feed)
        return {"tokens": np.asarray(outputs["tokens"])[0], "scores": np.asarray(outputs["scores"])[0]}

    def __call__(self, inputs):
        results = [self.tokens(data) for data in inputs]
        captions = [self.vocab.decode(result["tokens"][0]) for result in results]
        return captions, np.array([result["scores"][0] for result in results], np.float32)

    def with_attention(self, inputs):
        from tfcaption.inference import AttentionUnavailableError

        raise AttentionUnavailableError(f"{self.path}: LiteRT and ONNX files return tokens only, no attention; "
                                        "pass the run directory or a SavedModel for attention maps.")
