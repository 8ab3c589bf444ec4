"""What every console script shares: its argument parser, quiet TensorFlow, one-line errors, config overrides."""

import argparse
import contextlib
import difflib
import functools
import json
import os
import sys
import tempfile


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, but a mistake on the command line is one line and exit code 2, as every other error a
    user can fix: `PROG: error: argument --preset: invalid choice: 'smal' (choose from ...; did you mean 'small'?)`.

    argparse prints its usage (several lines, a long one for a flag with many choices) above the error; the
    error alone names the flag and, for a choice, every choice, and `--help` still prints the usage.
    """

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(str(message).split())}\n")

    def _check_value(self, action, value):
        # argparse's own message lists the choices as reprs; here they read as a list, with the nearest one
        if action.choices is not None and value not in action.choices:
            choices = [str(choice) for choice in action.choices]
            close = difflib.get_close_matches(str(value), choices, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise argparse.ArgumentError(action, f"invalid choice: {value!r} (choose from {', '.join(choices)}{hint})")


def quiet_tensorflow():
    """Imports TensorFlow without its C++ start-up chatter on the console.

    TF_CPP_MIN_LOG_LEVEL quiets TensorFlow's own logging; the absl/CUDA lines
    written while the library loads ignore it, so the import runs with fd 2
    held back (and replayed if the import itself fails).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with captured_native_stderr(keep_on=()):
        import tensorflow as tf

        tf.config.list_physical_devices()  # device discovery logs its CUDA probing here


@contextlib.contextmanager
def captured_native_stderr(keep_on=(ValueError, OSError)):
    """Holds back what native code writes to file descriptor 2 while TensorFlow starts.

    TensorFlow 2.21 writes absl/CUDA start-up lines ("All log messages before absl::InitializeLog()",
    "Could not find cuda drivers") straight to fd 2, ignoring TF_CPP_MIN_LOG_LEVEL, which would bury
    the one-line error this script promises. The captured text is dropped when the block succeeds
    or fails with an expected, already explained error (`keep_on`: the readers' and converter's
    ValueErrors, missing files), and written back before any other exception propagates, so an
    unexpected failure keeps its native diagnostics.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreter): capture nothing
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        except Exception as error:
            sys.stderr.flush()
            os.dup2(saved, 2)
            if not isinstance(error, keep_on):
                capture.seek(0)
                os.write(2, capture.read())
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def one_line_errors(program):
    """Turns the errors a user can fix (missing paths, bad values) into one line and exit code 2."""

    def decorate(main):
        @functools.wraps(main)
        def wrapper(argv=None):
            try:
                return main(argv)
            except (FileNotFoundError, FileExistsError, ValueError, ImportError) as error:
                print(f"{program}: error: {error}", file=sys.stderr)
                return 2
            except KeyboardInterrupt:
                print(f"{program}: interrupted", file=sys.stderr)
                return 130

        return wrapper

    return decorate


def parse_value(text, annotation=None):
    """A `--set` value: JSON when it parses (numbers, booleans, lists), else the raw string.

    For a string field (`annotation` str) the text is the value as written unless it is a quoted JSON
    string, so `--set export.model_name=2024` names the export "2024" rather than failing as a number. A
    boolean field's text goes to the field's check as written, which reads `yes`, `off`, `1`, ... (any case).
    """
    if annotation is bool:
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    if annotation is str and not isinstance(value, str):
        return text
    return value


def apply_overrides(run_config, assignments):
    """Applies `section.field=value` assignments (or a bare `field=value`) to a RunConfig, in place.

    An assignment is a `--set` string (its value parsed by `parse_value`) or a `(key, value)` pair from
    a flag. Model parts take a dotted path (`model.encoder.num_layers=4`, `model.image_encoder.patch_size=8`,
    or a whole part as JSON: `model.decoder={"type": "transformer", "num_layers": 2}`). Old names go where
    the field lives now: flat train fields (`train.max_caption_words`, ...; `config.LEGACY_TRAIN_FIELDS`)
    and flat model fields (`model.num_encoder_layers`, `model.image_size`, ...;
    `models.config.LEGACY_FIELDS`). Setting a part's `type` to another kind starts that part from the kind's
    defaults (`model.image_encoder.type=vit`; `model.decoder.type=transformer` keeps `num_layers`, one kind). A string field takes the text as written
    (`export.model_name=2024`). All changes are applied together, so fields checked against each
    other (hidden_dim = num_heads * key_dim) can change in one go.
    """
    import dataclasses

    from tfcaption.config import SECTIONS, RunConfig, resolve_field
    from tfcaption.models.config import LEGACY_FIELDS, PART_TYPES

    values = run_config.to_dict()
    for assignment in assignments or ():
        if isinstance(assignment, tuple):
            key, value, text = *assignment, None
        else:
            key, sep, text = assignment.partition("=")
            if not sep:
                raise ValueError(f"--set expects FIELD=VALUE, got {assignment!r}.")
        path = key.split(".")
        if len(path) == 1:  # a bare field: the section that has it
            owners = [name for name in SECTIONS if path[0] in {f.name for f in dataclasses.fields(SECTIONS[name])}]
            path = owners[:1] + path
        section, field = resolve_field(path[0], path[1]) if len(path) > 1 else (path[0], None)
        path = [section, field] + path[2:]
        known = section in SECTIONS and field in {f.name for f in dataclasses.fields(SECTIONS[section])}
        if section == "model" and field in LEGACY_FIELDS and len(path) == 2:
            known = True  # moved into its part by CaptionerConfig.from_dict
        if section == "model" and field in PART_TYPES and len(path) == 3:
            kind = _part_kind(values, field)
            known = kind is not None and path[2] in {f.name for f in dataclasses.fields(kind)}
        if not known or len(path) > (3 if section == "model" and field in PART_TYPES else 2):
            raise ValueError(f"Unknown config field {key!r} (see config.json of any run for the field names).")
        if text is not None:
            value = parse_value(text, _annotation(values, path))
        target = values
        for name in path[:-1]:
            target = target[name]
        if section == "model" and len(path) == 2 and field in LEGACY_FIELDS:
            part, part_field = LEGACY_FIELDS[field]
            values["model"][part][part_field] = value  # the newest assignment wins over the part's value
            continue
        if len(path) == 3 and path[2] == "type" and isinstance(value, str):
            kinds = PART_TYPES[field]
            if kinds.get(value, value) is not kinds.get(target.get("type")):
                target.clear()  # a part of another kind starts from its defaults, as in CaptionerConfig.from_preset
        target[path[-1]] = value
    updated = RunConfig.from_dict(values)  # every field checked: a wrong value is one line naming it
    for name in SECTIONS:
        setattr(run_config, name, getattr(updated, name))
    return run_config


def _annotation(values, path):
    """The annotation of the config field at `path` (section, field[, part field]), or None."""
    from tfcaption.config import SECTIONS
    from tfcaption.config_fields import field_types
    from tfcaption.models.config import LEGACY_FIELDS, PART_TYPES

    section, field = path[:2]
    if section == "model" and len(path) == 2 and field in LEGACY_FIELDS:
        path = ["model", *LEGACY_FIELDS[field]]
        field = path[1]
    if section == "model" and field in PART_TYPES and len(path) == 3:
        kind = _part_kind(values, field)
        return field_types(kind).get(path[2]) if kind else None
    return field_types(SECTIONS[section]).get(field)


def _part_kind(values, part):
    """The config dataclass of model part `part` as `values` hold it now, or None (not a part of a known type)."""
    from tfcaption.models.config import PART_TYPES

    kind = values["model"][part].get("type") if isinstance(values["model"][part], dict) else None
    return PART_TYPES[part].get(kind) if isinstance(kind, str) else None
