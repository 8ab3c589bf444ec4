"""Running a LiteRT (`model.tflite`) or ONNX (`model.onnx`) export from Python: what `tfcaption.load` and
`tfcaption-caption --model FILE` use.

Each image is decoded and resized with the SavedModel's own TensorFlow ops (`portable.image_pixels`), fed
as uint8 [1, H, W, 3] to ai-edge-litert's interpreter or an ONNX Runtime session, and its best beam's
tokens are detokenised with the `vocab.txt` beside the file. The decoding (greedy or beam size, caption
length) is fixed in the file: a request for another is refused in one line, never silently ignored.
"""

import os

import numpy as np

from tfcaption.data.vocabulary import load_vocabulary
from tfcaption.export.portable import read_metadata, image_pixels

SUFFIXES = {".tflite": "litert", ".onnx": "onnx"}
EXTRAS = {"litert": ("ai_edge_litert", "litert"), "onnx": ("onnxruntime", "onnx")}


def portable_format(path):
    """"litert" or "onnx" for a path to such a file, else None."""
    return SUFFIXES.get(os.path.splitext(os.fspath(path))[1].lower())


def _litert_runner(path):
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=path).get_signature_runner()
    return lambda pixels: runner(pixels=pixels)


def _onnx_runner(path):
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return lambda pixels: dict(zip(names, session.run(names, {"pixels": pixels})))


def _requested_beam_size(beam_size, sampler):
    """The beam size a caller's `beam_size` / `sampler` asks for, None when it asks for nothing, or a
    ValueError for a sampler the file cannot run."""
    if sampler is None:
        return None if beam_size is None else int(beam_size)
    from tfcaption import samplers

    sampler = samplers.get(sampler)
    if isinstance(sampler, samplers.GreedySampler) and sampler.get_config() == samplers.GreedySampler().get_config():
        return 1
    if isinstance(sampler, samplers.BeamSampler) and sampler.get_config() == samplers.BeamSampler(
            sampler.num_beams).get_config():
        return sampler.num_beams
    raise ValueError(f"{type(sampler).__name__} with these settings: LiteRT and ONNX files decode with the greedy or "
                     "beam search fixed at export (tfcaption-export --beam-size); caption with a run directory "
                     "or SavedModel to sample.")


class PortableBackend:
    """A `CaptionPredictor` backend over a .tflite or .onnx file and the metadata.json / vocab.txt beside it."""

    input_key = "images"

    def __init__(self, path, beam_size=None, sampler=None, max_length=None):
        self.path = os.fspath(path)
        self.format = portable_format(self.path)
        self.metadata = metadata = read_metadata(self.path)
        fixed_beam, fixed_steps = metadata["beam_size"], metadata["max_steps"]
        requested = _requested_beam_size(beam_size, sampler)
        if requested is not None and requested != fixed_beam:
            raise ValueError(f"{self.path} decodes with beam size {fixed_beam}, fixed at export; got {requested} "
                             "(re-export with tfcaption-export --beam-size).")
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
        self.image_size = tuple(metadata["image_size"])

    def tokens(self, image_bytes):
        """The file's outputs for one encoded image: `tokens` int32 [k, T] and `scores` float32 [k]."""
        outputs = self._run(image_pixels(image_bytes, self.image_size)[None])
        return {"tokens": np.asarray(outputs["tokens"])[0], "scores": np.asarray(outputs["scores"])[0]}

    def __call__(self, inputs):
        results = [self.tokens(data) for data in inputs]
        captions = [self.vocab.decode(result["tokens"][0]) for result in results]
        return captions, np.array([result["scores"][0] for result in results], np.float32)

    def with_attention(self, inputs):
        from tfcaption.inference import AttentionUnavailableError

        raise AttentionUnavailableError(f"{self.path}: LiteRT and ONNX files return tokens only, no attention; "
                                        "pass the run directory or a SavedModel for attention maps.")
