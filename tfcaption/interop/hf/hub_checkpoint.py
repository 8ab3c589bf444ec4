"""A Hugging Face Hub checkpoint (a directory in the Hub's layout or ``hf://OWNER/NAME``), read without torch."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tfcaption.interop.hf.architectures import architecture_of
from tfcaption.interop.hf.errors import HubCheckpointError, HubFilesNotFoundError
from tfcaption.interop.hf.image_processor_settings import read_image_processor_settings
from tfcaption.interop.hf.json_files import read_json_object
from tfcaption.interop.hf.sources import CONFIG_FILE, resolve_source
from tfcaption.interop.hf.tokenizer_files import read_tokenizer_files
from tfcaption.interop.hf.weights import WeightFiles, find_weights_file

__all__ = ["HubCheckpoint"]


class HubCheckpoint:
    """A checkpoint's config, tensors, tokenizer and image processor settings, each read when first asked for.

    Supported architectures: BlipForConditionalGeneration, CLIPModel, CLIPVisionModel (config.json's
    ``architectures``, else its ``model_type``). Sizes are whatever config.json says.

    Args:
        source: a directory in the Hub's layout (config.json, model.safetensors [sharded] or pytorch_model.bin,
            tokenizer and processor files), or ``hf://OWNER/NAME[@REVISION]``, fetched into huggingface_hub's
            cache (the ``hub`` extra) when online, read from that cache offline.
        tied: absent tensor name -> the tensor it equals; by default the architecture's (BLIP's LM head decoder
            weight and bias from the word embeddings and ``cls.predictions.bias``) while config.json ties them.

    Raises:
        HubFilesNotFoundError: (one line) the directory or its config.json is missing, or an ``hf://`` source is
            neither cached nor fetchable; the message names the files and where to put them.
        HubCheckpointError: (one line) config.json names an architecture tfcaption does not read.

    Example:

    >>> ckpt = HubCheckpoint("tests/fixtures/hf/blip_b")  # or "hf://Salesforce/blip-image-captioning-base"
    >>> ckpt.architecture, ckpt.config["text_config"]["hidden_size"]
    ('BlipForConditionalGeneration', 40)
    >>> ckpt.require("text_decoder.cls.predictions.decoder.weight").dtype  # tied, float16 in the file
    dtype('float32')
    >>> ckpt.tokenizer.vocabulary[37:], ckpt.tokenizer.special_ids["bos_token"]
    (['[DEC]', '[ENC]'], 37)
    >>> ckpt.image_processor.size, ckpt.image_processor.resample_name
    ({'height': 48, 'width': 48}, 'bicubic')
    """

    def __init__(self, source: str | os.PathLike, tied: dict[str, str] | None = None):
        self.source = os.fspath(source)
        self.directory = resolve_source(source)
        path = self.directory / CONFIG_FILE
        if not path.is_file():
            raise HubFilesNotFoundError(f"{self.directory}: no {CONFIG_FILE}; a checkpoint directory needs the "
                                        f"repository's {CONFIG_FILE} beside its weights")
        self.config = read_json_object(path)
        self._architecture = architecture_of(self.config, str(path))
        self.tied = dict(self._architecture.tied_for(self.config) if tied is None else tied)
        self._weights = None
        self._file_names = None  # name (v5's naming) -> name in the file
        self._tokenizer = None
        self._image_processor = None

    @property
    def architecture(self) -> str:
        """The transformers class name, e.g. ``BlipForConditionalGeneration``."""
        return self._architecture.name

    @property
    def model_type(self) -> str:
        """config.json's ``model_type`` (``blip``, ``clip``, ``clip_vision_model``)."""
        return self.config.get("model_type", self._architecture.model_type)

    @property
    def weights(self) -> WeightFiles:
        """The weight files and the tensor names they hold."""
        if self._weights is None:
            self._weights = WeightFiles(self.directory)
        return self._weights

    @property
    def weights_file(self) -> str:
        """The file the weights are read from (see `find_weights_file`), found without reading it; a one-line
        `HubFilesNotFoundError` naming the files it looks for when none is there."""
        return find_weights_file(self.directory)

    @property
    def names(self) -> list[str]:
        """Every tensor name: the files' (in their order, as transformers v5 names them), then the tied ones
        they leave out."""
        present = self._present()
        return list(present) + [n for n, source in self.tied.items() if n not in present and source in present]

    def __contains__(self, name: str) -> bool:
        present = self._present()
        return name in present or (name in self.tied and self.tied[name] in present)

    def require(self, name: str) -> np.ndarray:
        """Tensor `name` as a numpy array (floating point as float32), a tied one from its source.

        Raises:
            HubCheckpointError: (one line) neither the weight files nor the tied mapping give `name`; names the
                tensor and the file.
        """
        present = self._present()
        if name in present:
            return self.weights.read(present[name])
        source = self.tied.get(name)
        if source is not None:
            if source in present:
                return self.weights.read(present[source])
            raise HubCheckpointError(f"{self._where()}: no tensor {source!r}, nor {name!r}, which is tied to it")
        raise HubCheckpointError(f"{self._where()}: no tensor {name!r} ({len(present)} tensors in it)")

    def _present(self) -> dict[str, str]:
        if self._file_names is None:
            self._file_names = {self._architecture.canonical(n): n for n in self.weights.names}
        return self._file_names

    def tensors(self, prefix: str | None = None) -> dict[str, np.ndarray]:
        """Name -> numpy array for every tensor (tied ones included); floating point as float32.

        Args:
            prefix: only the names starting with it, returned without it (``"vision_model."`` gives a CLIPModel's
                vision tower under a CLIPVisionModel's names).
        """
        names = self.names if prefix is None else [n for n in self.names if n.startswith(prefix)]
        return {(n if prefix is None else n[len(prefix):]): self.require(n) for n in names}

    @property
    def tokenizer(self):
        """The tokenizer files' vocabulary, special tokens and settings
        (:class:`~tfcaption.interop.hf.tokenizer_files.TokenizerFiles`)."""
        if self._tokenizer is None:
            self._tokenizer = read_tokenizer_files(self.directory)
        return self._tokenizer

    @property
    def image_processor(self):
        """The image processor's settings
        (:class:`~tfcaption.interop.hf.image_processor_settings.ImageProcessorSettings`)."""
        if self._image_processor is None:
            self._image_processor = read_image_processor_settings(self.directory)
        return self._image_processor

    def _where(self) -> Path:
        files = self.weights.files
        index = [n for n in ("model.safetensors.index.json", "pytorch_model.bin.index.json")
                 if (self.directory / n).is_file()]
        return self.directory / (files[0] if len(files) == 1 else (index[0] if index else files[0]))

    def __repr__(self) -> str:
        return f"HubCheckpoint({self.source!r}, architecture={self.architecture!r})"
