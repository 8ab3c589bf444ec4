"""What every console script shares: quiet TensorFlow, one-line errors, config overrides."""

import functools
import json
import os
import sys


def quiet_tensorflow():
    """Silences TensorFlow's C++ start-up chatter (call before importing tensorflow)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "2")


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


def parse_value(text):
    """A `--set` value: JSON when it parses (numbers, booleans, lists), else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(run_config, assignments):
    """Applies `section.field=value` (or a bare `field=value`) assignments to a RunConfig."""
    import dataclasses

    for assignment in assignments or ():
        key, sep, text = assignment.partition("=")
        if not sep:
            raise ValueError(f"--set expects FIELD=VALUE, got {assignment!r}.")
        section, _, field = key.rpartition(".")
        sections = [section] if section else ["train", "model"]
        for name in sections:
            target = getattr(run_config, name, None)
            if target is not None and field in {f.name for f in dataclasses.fields(target)}:
                setattr(run_config, name, dataclasses.replace(target, **{field: parse_value(text)}))
                break
        else:
            raise ValueError(f"Unknown config field {key!r} (see config.json of any run for the field names).")
    return run_config
