"""Exporting a captioner to LiteRT (formerly TensorFlow Lite): `model.tflite` with the decoding inside.

The pixels-to-tokens function of `tfcaption.export.portable` is frozen (its variables become constants:
left as resource variables, the interpreter fails reading them inside the decoding loop's WHILE) and
converted with LiteRT's built-in ops only, so the plain runtime on Android, iOS, embedded Linux and
Python runs it without the Flex (TensorFlow ops) delegate; `builtin_check` reads the written file's
operator codes and refuses any custom or Flex op.

Quantization (`QUANTIZE_MODES`): "float16" stores the weights in float16, "dynamic_int8" in int8 with
float activations, "int8" is full integer quantization (int8 weights and activations, float built-ins where
LiteRT has no int8 kernel), calibrated on a representative dataset of images the file takes (a run's
validation images or the user's: `export_run_litert`). TensorFlow 2.21's calibrator cannot calibrate the decoding function
as the float exports trace it (a loop-invariant WHILE output without a buffer crashes it,
tensorflow/tensorflow#75140; -1e9 masks erase the quantized values), so "int8" traces it under
`tfcaption.export.int8.int8_tracing`, which changes both for this export only; `benchmarks/litert_int8.py`
records the crash of the unchanged function.

The random samplers (random, top-k, top-p) convert too: their per-row hash runs on 32-bit keys with
LiteRT's built-in bitwise ops, and the file takes a `seed` beside the pixels.
"""

import contextlib
import os
import warnings

import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from tfcaption.export.int8 import (DEFAULT_CALIBRATION_IMAGES, calibration_pixels, int8_tracing,
                                   representative_dataset)
from tfcaption.export.portable import (default_output, pixels_to_tokens, portable_metadata, prepared_output,
                                       run_input_regions, write_sidecar_files)

MODEL_FILE = "model.tflite"
QUANTIZE_MODES = ("float16", "dynamic_int8", "int8")
_BUILTIN_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}


def operator_names(model_content):
    """The operators a .tflite flatbuffer uses: builtin names ("WHILE", ...) and custom codes ("FlexX", ...)."""
    model = schema.Model.GetRootAs(model_content, 0)
    names = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            names.append(code.CustomCode().decode("utf-8"))
        else:
            names.append(_BUILTIN_NAMES.get(builtin, str(builtin)))
    return sorted(set(names))


def builtin_check(model_content):
    """`model_content` unchanged, or a ValueError naming its custom / Flex operators."""
    custom = [name for name in operator_names(model_content) if name not in _BUILTIN_NAMES.values()]
    if custom:
        raise ValueError(f"the converted model uses operators outside LiteRT's built-in set: {', '.join(custom)}.")
    return model_content


def checked_quantize(quantize):
    """`quantize` when it is None or one of `QUANTIZE_MODES`, else a one-line ValueError."""
    if quantize not in (None, *QUANTIZE_MODES):
        raise ValueError(f"--quantize must be one of {', '.join(QUANTIZE_MODES)}, got {quantize!r}.")
    return quantize


def frozen_function(function):
    """`function` (a `tf.function` with one input signature) with its variables as constants, same outputs."""
    concrete = function.get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    # The frozen function returns a flat list; this wrapper gives the signature its named outputs back.
    return tf.function(lambda *inputs: tf.nest.pack_sequence_as(concrete.structured_outputs, frozen(*inputs)),
                       input_signature=concrete.structured_input_signature[0])


def frozen_converter(function):
    """A `TFLiteConverter` for a `tf.function` with one input signature, its variables frozen, built-in ops
    only (the caller adds any quantization settings)."""
    named = frozen_function(function)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([named.get_concrete_function()], tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter


def convert(function, quantize=None, calibration=None):
    """The .tflite bytes of a `tf.function` with one input signature, frozen, built-in ops only.

    `quantize` "int8" traces the function under `int8_tracing` (so it must not have been traced before) and
    calibrates it on `calibration`, a `representative_dataset` callable (required then)."""
    checked_quantize(quantize)
    if quantize == "int8" and calibration is None:
        raise ValueError("--quantize int8 needs a representative dataset (calibration images).")
    with int8_tracing() if quantize == "int8" else contextlib.nullcontext():
        converter = frozen_converter(function)
    if quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantize == "int8":
            # Int8 kernels where LiteRT has them, float built-ins for the rest (the decoding loop's WHILE).
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                                   tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.representative_dataset = calibration
    with warnings.catch_warnings():
        # The calibrator's own use of tf.lite.Interpreter (inputs by name) warns of its deprecation to the user.
        warnings.filterwarnings("ignore", message=r"\s*Warning: tf\.lite\.Interpreter is deprecated")
        return builtin_check(converter.convert())


def export_litert(captioner, output, beam_size=3, max_steps=None, quantize=None, sampler=None, regions=None,
                  calibration_pixels=None):
    """Writes `output/model.tflite`, `vocab.txt` and `metadata.json`; returns the model file's path.

    Args:
        captioner: a `tfcaption.ImageCaptioner`.
        output: the directory (created; refused inside a TF Serving model directory; an existing
            model.tflite is never overwritten).
        beam_size: 1: greedy search; k > 1: beam search with k beams (fixed in the file).
        max_steps: tokens generated at most, <eos> included (None: the model's longest).
        quantize: None (float32), "float16", "dynamic_int8" or "int8" (full integer: int8 weights and
            activations, calibrated on `calibration_pixels`).
        sampler: a random sampler (random, top_k, top_p; a `Sampler` or a name) in place of the search: the
            file then also takes `seed`, int32 [1], and returns one caption.
        regions: a region-feature model's regions per image R, fixed in the file (it takes float32 features
            [1, R, D], zero rows as padding; None: `MAX_REGIONS`); refused for a pixel model.
        calibration_pixels: with "int8", uint8 [n, H, W, 3] images the file's input takes
            (`tfcaption.export.int8.calibration_pixels`), the representative dataset.
    """
    checked_quantize(quantize)
    function = pixels_to_tokens(captioner, beam_size, max_steps, sampler, regions)
    metadata = portable_metadata(captioner, "litert", beam_size, max_steps, quantize, sampler, regions)
    calibration = None
    if quantize == "int8":
        if calibration_pixels is None:
            raise ValueError("--quantize int8 needs calibration images (calibration_pixels).")
        calibration = representative_dataset(calibration_pixels, seeded=sampler is not None)
    path = prepared_output(output, MODEL_FILE)
    content = convert(function, quantize, calibration)
    with open(path, "wb") as f:
        f.write(content)
    write_sidecar_files(captioner, output, metadata)
    return path


def export_run_litert(captioner, run_config, output=None, beam_size=None, max_steps=None, quantize=None,
                      sampler=None, regions=None, calibration_images=DEFAULT_CALIBRATION_IMAGES,
                      calibration_data=None):
    """`export_litert` with a run's settings (`export.beam_size`, `data.max_decode_steps`, a region model's
    `max_regions`: `run_input_regions`); default output `exports/<name>/litert/`; "int8" calibrates on the
    first `calibration_images` of `calibration_data` (a folder of images or a glob pattern), by default of the
    run's validation split (`calibration_pixels`)."""
    checked_quantize(quantize)
    pixels = (calibration_pixels(captioner, run_config, calibration_images, calibration_data)
              if quantize == "int8" else None)
    return export_litert(captioner, output or default_output(run_config.export_name, "litert"),
                         beam_size or run_config.export.beam_size, max_steps or run_config.data.max_decode_steps,
                         quantize, sampler, run_input_regions(captioner, run_config, regions), pixels)
