"""Dataset specs: turning `--data SPEC` into a prepared records directory."""

import os

import tensorflow as tf


class DatasetNotFoundError(FileNotFoundError):
    """A dataset spec that names nothing usable; the message is one line for the console."""


def resolve_dataset(spec, data_root, options=None, verbose=True):
    """Returns the directory of prepared records for `spec`, building it if needed.

    Specs:
        shapes            the built-in procedurally generated dataset (built once,
                          then cached under `data_root`); `options` are
                          `ShapesConfig` fields (e.g. {"num_train": 2000}).
        records:DIR, DIR  a directory already holding prepared shards and a
                          manifest.json (local path or any tf.io.gfile URL).
    """
    options = dict(options or {})
    if spec == "shapes":
        from tfcaption.data.shapes import ShapesConfig, build_shapes_dataset

        return build_shapes_dataset(data_root, ShapesConfig.from_dict(options), verbose=verbose)
    path = spec[len("records:"):] if spec.startswith("records:") else spec
    if "://" not in path:
        path = os.path.expanduser(path)
    if not tf.io.gfile.exists(path):
        raise DatasetNotFoundError(f"Dataset not found: {path!r} (give 'shapes' or a prepared records directory).")
    if not tf.io.gfile.exists(os.path.join(path, "manifest.json")):
        raise DatasetNotFoundError(f"{path} has no manifest.json: it is not a prepared tfcaption dataset.")
    return path
