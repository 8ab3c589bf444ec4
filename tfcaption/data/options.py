"""The typed `data.options` of source specs: what each scheme takes besides its path, checked with the run config.

`data.options` is a dict: for `shapes`, `ShapesConfig` fields (tfcaption.datasets.shapes.dataset); for a
source spec (`coco:`, `karpathy:`, `tfds:`, `folder:`, `features:`), the keyword arguments of
`tfcaption.data.prepare.prepare_dataset` (`PrepareOptions`) and the scheme's own options, the same as
written after ``?`` in the spec (`SOURCE_OPTION_TYPES`). `check_source_options` checks them where the
`DataConfig` is built, so a wrong one is one line naming `data.options.FIELD` before anything is read.

This module is plain data (no TensorFlow): the config imports it.
"""

from __future__ import annotations

import dataclasses
import urllib.parse

from tfcaption.config_fields import (ConfigError, Fraction, Literal, Optional, PositiveInt, check, check_fields,
                                     field_types, shown)

SOURCE_SCHEMES = ("coco", "karpathy", "tfds", "folder", "features")
DEFAULT_MAX_PIXELS = 40_000_000  # tfcaption.data.pipeline's; larger images are skipped, read from the header
MAX_REGIONS = 50  # tfcaption.data.region_features's: M2's released features keep 50 regions per image

# restval=train folds Karpathy's "restval" images into training (M2's choice), restval=keep keeps them apart;
# true / false say the same
RestVal = bool | Literal["train", "keep"]


@dataclasses.dataclass
class PrepareOptions:
    """Options every source spec takes: how it is prepared into shards (`prepare_dataset`'s arguments).

    Args:
        images_per_shard: items per TFRecord shard (the unit of parallel work and of resumption).
        workers: threads reading and checking images (null: twice the CPU count, at most 16).
        max_image_side: downscale larger images to this longer side, stored as JPEG (null: keep them).
        max_pixels: skip images with more pixels than this.
    """

    PATH = "data.options"

    images_per_shard: PositiveInt = 1000
    workers: Optional[PositiveInt] = None
    max_image_side: Optional[PositiveInt] = None
    max_pixels: PositiveInt = DEFAULT_MAX_PIXELS

    def __post_init__(self):
        check_fields(self, self.PATH)


@dataclasses.dataclass
class CocoOptions(PrepareOptions):
    """`coco:FILE.json` options: `images` (the image folder), `split` (the split's name)."""

    images: str = ""
    split: str = ""


@dataclasses.dataclass
class KarpathyOptions(PrepareOptions):
    """`karpathy:FILE.json` options: `images` (the root of the file's paths), `restval`."""

    images: str = ""
    restval: RestVal = "train"


@dataclasses.dataclass
class TfdsOptions(PrepareOptions):
    """`tfds:NAME` options: `data_dir`, `download`, `splits` ("train,val" or a list), `restval`."""

    data_dir: str = ""
    download: bool = True
    splits: str | tuple[str, ...] = ""
    restval: RestVal = "train"


@dataclasses.dataclass
class FolderOptions(PrepareOptions):
    """`folder:DIR` options: `captions` (the captions table), `val` and `test` (the fractions held out)."""

    captions: str = ""
    val: Fraction = 0.05
    test: Fraction = 0.05


@dataclasses.dataclass
class FeaturesOptions(PrepareOptions):
    """`features:FILE.hdf5` options: `captions` (a Karpathy file, or COCO captions files), `max_regions`, `restval`."""

    captions: str | tuple[str, ...] = ""
    max_regions: PositiveInt = MAX_REGIONS
    restval: RestVal = "train"


SOURCE_OPTION_TYPES = {"coco": CocoOptions, "karpathy": KarpathyOptions, "tfds": TfdsOptions,
                       "folder": FolderOptions, "features": FeaturesOptions}
PREPARE_OPTIONS = tuple(field.name for field in dataclasses.fields(PrepareOptions))
# The options each source scheme takes after "?" in its spec (and as data.options, with PREPARE_OPTIONS).
SOURCE_OPTIONS = {scheme: tuple(name for name in field_types(cls) if name not in PREPARE_OPTIONS)
                  for scheme, cls in SOURCE_OPTION_TYPES.items()}


# restval's own words for its two values, besides the boolean ones (restval=no keeps restval apart).
RESTVAL_WORDS = {"train": True, "keep": False}


def takes_bool(annotation):
    """Whether a source option is a yes/no one (`download`, `restval`): bool, or a union with bool."""
    return annotation is bool or bool in getattr(annotation, "__args__", ())


def flag_value(name, value, path):
    """A yes/no option's value as a bool: true / false, yes / no, on / off, 1 / 0 in any case (restval also
    train / keep), or a `ConfigError` naming `path` (e.g. `data.spec: option download`).

    Example:
    >>> [flag_value("download", text, "download") for text in ("No", "ON", "1", False)]
    [False, True, True, False]
    """
    if name == "restval" and isinstance(value, str) and value.strip().lower() in RESTVAL_WORDS:
        return RESTVAL_WORDS[value.strip().lower()]
    return check(path, bool, value)


def same_option(scheme, name, first, second):
    """Whether two values of one source option say the same: a yes/no option by meaning (`download=0` and
    false), any other as text."""
    if takes_bool(field_types(SOURCE_OPTION_TYPES[scheme]).get(name)):
        return flag_value(name, first, f"option {name}") == flag_value(name, second, f"option {name}")
    return str(first) == str(second)


def source_scheme(spec):
    """The source scheme a dataset spec names ("coco", ...), or None (shapes, a records directory)."""
    scheme, sep, _ = str(spec).strip().partition(":")
    return scheme if sep and scheme in SOURCE_SCHEMES else None


def spec_options(spec):
    """The options written after "?" in a dataset spec, as text (`sources.DatasetSpec.parse` reads them alike)."""
    return dict(urllib.parse.parse_qsl(str(spec).strip().partition("?")[2], keep_blank_values=True))


def check_source_options(scheme, options, spec=None):
    """`options` (a dict) checked as `scheme`'s `data.options`: the given ones, converted (3.0 -> 3), or a
    `ConfigError` naming `data.options.FIELD`. With `spec`, the names written after "?" in it are checked too
    (their text is the source's to read), and an option given in both places must agree."""
    cls = SOURCE_OPTION_TYPES[scheme]
    names = tuple(field_types(cls))
    for name in options:
        if name not in names:
            raise ConfigError(f"{cls.PATH}.{name} does not apply to {scheme}: sources (they take "
                              f"{', '.join(names)}), got {shown(options[name])}.")
    checked = cls(**options)
    checked = {name: getattr(checked, name) for name in options}
    types = field_types(cls)
    for name, text in spec_options(spec or "").items():
        if name not in SOURCE_OPTIONS[scheme]:
            raise ConfigError(f"data.spec: option {name} does not apply to {scheme}: specs (they take "
                              f"{', '.join(SOURCE_OPTIONS[scheme])}; {', '.join(PREPARE_OPTIONS)} go in data.options).")
        if takes_bool(types[name]):  # checked here, so `?download=maybe` fails before anything is read
            flag_value(name, text, f"data.spec: option {name}")
        if name in checked and not same_option(scheme, name, checked[name], text):
            raise ConfigError(f"{cls.PATH}.{name} is {checked[name]!r} but data.spec says {name}={text}: give it once.")
    return checked
