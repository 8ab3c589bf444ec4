"""The dataset catalog: what a `--data SPEC` names, as a prepared records directory (prepared once).

Every command that reads a dataset goes through `resolve_dataset`: the built-in `shapes` dataset is
built once per configuration, a source spec (`coco:`, `karpathy:`, `tfds:`, `folder:`, `features:`) is
prepared once into ``<data_root>/<scheme>-<fingerprint>/`` and reused while the source is unchanged, and a
records directory is checked and returned. The spec syntax is documented in `tfcaption.data.sources`.
"""

from __future__ import annotations

import os

import tensorflow as tf

from tfcaption.data.options import PREPARE_OPTIONS, same_option
from tfcaption.data.prepare import prepare_dataset
from tfcaption.data.sources import (
    SOURCE_OPTIONS,
    SOURCE_SCHEMES,
    DatasetNotFoundError,
    DatasetSpec,
    open_source,
    source_fingerprint,
)


def default_data_root():
    """Where prepared datasets are cached: $TFCAPTION_DATA or ~/.cache/tfcaption/datasets."""
    return os.environ.get("TFCAPTION_DATA", os.path.join(os.path.expanduser("~"), ".cache", "tfcaption", "datasets"))


def resolve_dataset(spec, data_root=None, options=None, verbose=True):
    """Returns the directory of prepared records for `spec`, preparing it first if needed.

    Args:
        spec: a dataset spec (see `tfcaption.data.sources`), e.g. ``"features:/data/coco_detections.hdf5"``.
        data_root: where prepared datasets are cached (default: :func:`default_data_root`).
        options: for `shapes`, `ShapesConfig` fields (e.g. {"num_train": 2000}); for source specs,
            keyword arguments of `tfcaption.data.prepare.prepare_dataset` (e.g. {"max_image_side": 256})
            and the scheme's spec options (`sources.SOURCE_OPTIONS`, e.g. {"captions": "dataset_coco.json"}
            for `features:`), the same as writing them after ``?`` in the spec.
        verbose: print the preparation's progress and summary.

    Returns:
        The prepared directory (shards + manifest.json).

    Raises:
        ValueError: an option the scheme does not take, or one given in both the spec and `options`
            with different values.
    """
    options = dict(options or {})
    data_root = data_root or default_data_root()
    parsed = DatasetSpec.parse(spec)
    if parsed.scheme == "shapes":
        from tfcaption.datasets.shapes.dataset import ShapesConfig, build_shapes_dataset

        return build_shapes_dataset(data_root, ShapesConfig.from_dict(options), verbose=verbose)
    if parsed.scheme in SOURCE_SCHEMES:
        spec_options = SOURCE_OPTIONS[parsed.scheme]
        unknown = sorted(set(options) - set(PREPARE_OPTIONS) - set(spec_options))
        if unknown:
            raise ValueError(f"dataset_options {', '.join(unknown)} do not apply to {parsed.scheme}: sources "
                             f"(they take {', '.join(spec_options + PREPARE_OPTIONS)})")
        for key in set(options) & set(spec_options):
            value = options.pop(key)
            if key in parsed.options and not same_option(parsed.scheme, key, parsed.options[key], value):
                raise ValueError(f"option {key} is given twice, as {parsed.options[key]!r} in the spec and as "
                                 f"{value!r} in dataset_options")
            parsed.options[key] = value
        source = open_source(parsed)
        data_dir = os.path.join(os.path.expanduser(data_root), f"{parsed.scheme}-{source_fingerprint(source)}")
        prepare_dataset(source, data_dir, verbose=verbose, **options)
        return data_dir
    path = parsed.path
    if not tf.io.gfile.exists(path):
        raise DatasetNotFoundError(
            f"Dataset not found: {path!r} (give 'shapes', a prepared records directory, or a source spec: "
            f"{', '.join(s + ':...' for s in SOURCE_SCHEMES)}).")
    if not tf.io.gfile.exists(os.path.join(path, "manifest.json")):
        raise DatasetNotFoundError(f"{path} has no manifest.json: it is not a prepared tfcaption dataset "
                                   "(prepare it with tfcaption-prepare SOURCE DIR).")
    return path
