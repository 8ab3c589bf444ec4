"""A checkpoint's image preprocessing as its files state it: resize, centre crop, rescale, normalise.

Read from ``preprocessor_config.json`` (the published repositories) or transformers v5's
``processor_config.json`` (its ``image_processor`` entry). An entry a file leaves out takes the value the
transformers class uses by default (every flag on, rescale 1/255, bicubic, OpenAI CLIP's mean and std, which
BLIP's and CLIP's processors share); the sizes must be in the file. An integer ``size`` means the shortest edge
for CLIP's processors and a square for BLIP's, as transformers reads older files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tfcaption.interop.hf.errors import HubCheckpointError, HubFilesNotFoundError
from tfcaption.interop.hf.json_files import read_json_object

__all__ = ["ImageProcessorSettings", "read_image_processor_settings", "RESAMPLE_NAMES"]

RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}  # PIL's codes
_OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Processor classes whose integer `size` is the shortest edge (transformers' default_to_square=False).
_SHORTEST_EDGE_TYPES = ("CLIPImageProcessor", "CLIPImageProcessorFast", "CLIPImageProcessorPil",
                        "CLIPFeatureExtractor")


@dataclass(frozen=True)
class ImageProcessorSettings:
    """Image preprocessing settings.

    Args:
        processor_type: ``image_processor_type`` (or ``feature_extractor_type``), e.g. ``BlipImageProcessor``.
        do_resize: whether images are resized.
        size: ``{"height": h, "width": w}`` (resize to exactly that) or ``{"shortest_edge": s}`` (the short
            side to s, the aspect kept).
        resample: PIL's filter code (3: bicubic); `resample_name` says it in words.
        do_center_crop: whether a centre crop of `crop_size` follows the resize.
        crop_size: ``{"height": h, "width": w}``, or None without a crop.
        do_rescale: whether pixel values are multiplied by `rescale_factor`.
        rescale_factor: 1/255 for uint8 inputs.
        do_normalize: whether ``(x - image_mean) / image_std`` follows, per channel.
        image_mean: per-channel mean (RGB).
        image_std: per-channel standard deviation (RGB).
        do_convert_rgb: whether images are converted to RGB first.
        file: the file the settings came from.
    """

    processor_type: str | None
    do_resize: bool
    size: dict | None
    resample: int
    do_center_crop: bool
    crop_size: dict | None
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    image_mean: tuple
    image_std: tuple
    do_convert_rgb: bool
    file: str

    @property
    def resample_name(self) -> str:
        """The resize filter in words (``bicubic``)."""
        return RESAMPLE_NAMES.get(self.resample, f"PIL filter {self.resample}")

    @property
    def output_size(self) -> tuple[int, int] | None:
        """(height, width) of the processed image: the crop, else a fixed resize; None when it varies."""
        box = self.crop_size if self.do_center_crop else (self.size if self.do_resize else None)
        if box and "height" in box:
            return box["height"], box["width"]
        return None


def read_image_processor_settings(directory: str | Path) -> ImageProcessorSettings:
    """Reads `directory`'s ``preprocessor_config.json``, else its ``processor_config.json``.

    Raises:
        HubFilesNotFoundError: (one line) neither file is there, or ``processor_config.json`` has no
            ``image_processor`` entry.
        HubCheckpointError: (one line, naming the file) a malformed file or size.
    """
    d = Path(directory)
    if (d / "preprocessor_config.json").is_file():
        path = d / "preprocessor_config.json"
        values = read_json_object(path)
    elif (d / "processor_config.json").is_file():
        path = d / "processor_config.json"
        values = read_json_object(path).get("image_processor")
        if not isinstance(values, dict):
            raise HubFilesNotFoundError(f"{path}: no 'image_processor' entry; put the repository's "
                                        "preprocessor_config.json beside it")
    else:
        raise HubFilesNotFoundError(f"{d}: no image processor settings (preprocessor_config.json or "
                                    "processor_config.json); put the repository's file there")
    kind = values.get("image_processor_type") or values.get("feature_extractor_type")
    do_resize = bool(values.get("do_resize", True))
    do_center_crop = bool(values.get("do_center_crop", False))
    size = _size(values.get("size"), path, "size", square=kind not in _SHORTEST_EDGE_TYPES, needed=do_resize)
    crop = _size(values.get("crop_size"), path, "crop_size", square=True, needed=do_center_crop)
    mean = _channels(values.get("image_mean", _OPENAI_CLIP_MEAN), path, "image_mean")
    std = _channels(values.get("image_std", _OPENAI_CLIP_STD), path, "image_std")
    return ImageProcessorSettings(
        processor_type=kind, do_resize=do_resize, size=size, resample=int(values.get("resample", 3)),
        do_center_crop=do_center_crop, crop_size=crop if do_center_crop else None,
        do_rescale=bool(values.get("do_rescale", True)),
        rescale_factor=float(values.get("rescale_factor", 1 / 255)),
        do_normalize=bool(values.get("do_normalize", True)), image_mean=mean, image_std=std,
        do_convert_rgb=bool(values.get("do_convert_rgb", True)), file=path.name)


def _size(value, path, key, square, needed):
    if value is None:
        if needed:
            raise HubCheckpointError(f"{path}: no '{key}'; the image processor's size must be in the file")
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return {"height": value, "width": value} if square else {"shortest_edge": value}
    if isinstance(value, dict):
        if set(value) >= {"height", "width"}:
            return {"height": int(value["height"]), "width": int(value["width"])}
        if "shortest_edge" in value:
            return {"shortest_edge": int(value["shortest_edge"])}
    raise HubCheckpointError(f"{path}: '{key}' {value!r} is neither {{height, width}}, {{shortest_edge}} nor a "
                             "positive integer")


def _channels(value, path, key) -> tuple:
    if isinstance(value, (int, float)):
        value = [value] * 3
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise HubCheckpointError(f"{path}: '{key}' {value!r} must hold 3 numbers (RGB)")
    return tuple(float(v) for v in value)
