"""Exporting a captioner to ONNX: `model.onnx` with the decoding inside, for ONNX Runtime.

The same pixels-to-tokens function as the LiteRT file (`tfcaption.export.portable`), converted by tf2onnx,
which freezes its variables and turns the decoding loop into an ONNX `Loop`. It is traced inside
`without_xla_ops`, so the decoder's cache writes are selects rather than `XlaDynamicUpdateSlice`, an op
tf2onnx cannot express. TensorFlow's exact GELU (BLIP's) computes `Erfc`, which ONNX lacks: `_erfc` writes it
as `1 - Erf`. The random samplers are not offered: tf2onnx 1.17 cannot express the `BitwiseXor` of their per-row
hash.
"""

import numpy as np

from tfcaption.export.portable import (default_output, pixels_to_tokens, portable_metadata, prepared_output,
                                       run_input_regions, write_sidecar_files)
from tfcaption.layers.xla import without_xla_ops

MODEL_FILE = "model.onnx"
# An opset that tf2onnx 1.17 writes and ONNX Runtime 1.32 runs.
OPSET = 17


def _erfc(ctx, node, name, args):
    """tf2onnx's handler for TensorFlow's `Erfc`: the node becomes `1 - Erf(x)`."""
    from tf2onnx import utils

    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    erf = ctx.make_node("Erf", [node.input[0]]).output[0]
    one = ctx.make_const(utils.make_name(f"{name}_one"), np.array(1, dtype)).output[0]
    node.type = "Sub"
    ctx.replace_inputs(node, [one, erf])
    return node


def convert(function):
    """The ONNX model (a ModelProto) of a `tf.function` with one input signature."""
    import tf2onnx

    with without_xla_ops():
        model, _ = tf2onnx.convert.from_function(function, input_signature=function.input_signature, opset=OPSET,
                                                 custom_op_handlers={"Erfc": (_erfc, [])})
    return model


def export_onnx(captioner, output, beam_size=3, max_steps=None, regions=None):
    """Writes `output/model.onnx`, `vocab.txt` and `metadata.json`; returns the model file's path.

    Args and the output directory's rules are `tfcaption.export.litert.export_litert`'s (no quantization,
    no sampler).
    """
    function = pixels_to_tokens(captioner, beam_size, max_steps, regions=regions)
    metadata = portable_metadata(captioner, "onnx", beam_size, max_steps, regions=regions)
    metadata["opset"] = OPSET
    path = prepared_output(output, MODEL_FILE)
    model = convert(function)
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    write_sidecar_files(captioner, output, metadata)
    return path


def export_run_onnx(captioner, run_config, output=None, beam_size=None, max_steps=None, regions=None):
    """`export_onnx` with a run's settings; default output `exports/<name>/onnx/`."""
    return export_onnx(captioner, output or default_output(run_config.export_name, "onnx"),
                       beam_size or run_config.export.beam_size, max_steps or run_config.data.max_decode_steps,
                       run_input_regions(captioner, run_config, regions))
