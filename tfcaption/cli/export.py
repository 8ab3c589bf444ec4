"""tfcaption-export: write a trained model as a TF Serving SavedModel (image bytes in, captions out), or as a
LiteRT or ONNX file with the decoding inside (uint8 pixels, or a region model's float features, in; tokens
out)."""

import sys

from tfcaption.cli.common import ArgumentParser, one_line_errors, quiet_tensorflow

PROGRAM = "tfcaption-export"
FORMATS = ("saved_model", "litert", "onnx")


def _require(module, extra):
    """An ImportError (one line) naming the extra to install when `module` is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ImportError(f"--format {extra} needs {module}: pip install 'tfcaption[{extra}]'")


def build_parser():
    parser = ArgumentParser(prog=PROGRAM, description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("--model", default="runs/shapes-small", help="run directory (default runs/shapes-small)")
    parser.add_argument("--export-root", default=None, help="default: the run's export.root (savedmodel)")
    parser.add_argument("--name", default=None, help="model name under the export root (default: the run's)")
    parser.add_argument("--version", type=int, default=None, help="integer version (default: next free)")
    parser.add_argument("--beam-size", type=int, default=None, help="beam size fixed in the export")
    parser.add_argument("--max-steps", type=int, default=None, help="longest caption in tokens, <eos> included")
    parser.add_argument("--max-pixels", type=int, default=None,
                        help="largest width*height accepted per image, read from its header before decoding "
                             "(default 40000000); larger images fail the request with InvalidArgumentError")
    parser.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                        help="a text prompt to bake in (BLIP runs; repeat for several, the first is the default): "
                             "tokenized now, so the SavedModel needs no tensorflow-text; requests choose one "
                             "through the caption_with_prompt signature")
    parser.add_argument("--weights", choices=["best", "latest"], default="best")
    parser.add_argument("--format", choices=FORMATS, default="saved_model",
                        help="saved_model (TF Serving, the default), litert (model.tflite, built-in ops only) or "
                             "onnx (model.onnx); the last two write metadata.json and vocab.txt beside the file")
    parser.add_argument("--output", default=None,
                        help="with --format litert / onnx: the directory (default exports/<name>/<format>/)")
    parser.add_argument("--quantize", default=None, metavar="MODE",
                        help="with --format litert: float16, dynamic_int8 or int8 (full integer, calibrated on "
                             "images: --calibration-data; pixel models) (default: float32)")
    parser.add_argument("--calibration-images", type=int, default=None, metavar="N",
                        help="with --quantize int8: images in the representative dataset (default 100)")
    parser.add_argument("--calibration-data", default=None, metavar="PATH",
                        help="with --quantize int8: a folder of images or a glob pattern to calibrate on, like "
                             "those the file will caption (default: the run's validation split; an imported run "
                             "has none)")
    parser.add_argument("--regions", type=int, default=None, metavar="R",
                        help="with --format litert / onnx and a region-feature model: regions per image fixed in "
                             "the file, which takes float32 features [1, R, D], zero rows as padding (default: the "
                             "run's data max_regions, else 50)")
    sampling = parser.add_argument_group("sampling (--format litert)", "a random sampler in place of the search: the "
                                         "file then takes a seed beside the pixels")
    sampling.add_argument("--sampler", metavar="NAME", help="random, top_k or top_p")
    sampling.add_argument("--temperature", metavar="T", help="divide the logits by T > 0")
    sampling.add_argument("--top-k", metavar="K", help="sample among the K most probable words (top_k)")
    sampling.add_argument("--top-p", metavar="P", help="sample from the nucleus of probability P in (0, 1] (top_p)")
    return parser


def _check_flags(args):
    """One line for a flag the chosen format does not read."""
    portable = args.format != "saved_model"
    flags = (("--output", args.output, portable), ("--quantize", args.quantize, args.format == "litert"),
             ("--export-root", args.export_root, not portable), ("--version", args.version, not portable),
             ("--max-pixels", args.max_pixels, not portable), ("--regions", args.regions, portable),
             *((f"--{flag.replace('_', '-')}", getattr(args, flag), args.format == "litert")
               for flag in ("sampler", "temperature", "top_k", "top_p")))
    for flag, value, applies in flags:
        if value is not None and not applies:
            raise ValueError(f"{flag} does not apply to --format {args.format}.")
    for flag, value in (("--calibration-images", args.calibration_images),
                        ("--calibration-data", args.calibration_data)):
        if value is not None and args.quantize != "int8":
            raise ValueError(f"{flag} applies to --quantize int8.")


@one_line_errors(PROGRAM)
def main(argv=None):
    args = build_parser().parse_args(argv)
    _check_flags(args)
    sampler = None
    if args.format == "litert":
        from tfcaption.cli.sampling import sampler_from_args
        from tfcaption.export.litert import checked_quantize
        from tfcaption.export.portable import random_sampler

        checked_quantize(args.quantize)
        sampler = random_sampler(sampler_from_args(args))
        if sampler is not None and args.beam_size is not None:
            raise ValueError("--beam-size applies to the search; a --sampler file draws one caption.")
    quiet_tensorflow()
    from tfcaption.training.run_directory import load_run

    captioner, run_config = load_run(args.model, weights=args.weights)
    if args.format != "saved_model" and args.output is None:
        from tfcaption.export.portable import default_output

        args.output = default_output(args.name or run_config.export_name, args.format)
    if args.format == "litert":
        from tfcaption.export.litert import export_run_litert

        from tfcaption.export.int8 import DEFAULT_CALIBRATION_IMAGES

        images = DEFAULT_CALIBRATION_IMAGES if args.calibration_images is None else args.calibration_images
        print(export_run_litert(captioner, run_config, args.output, args.beam_size, args.max_steps, args.quantize,
                                sampler, args.regions, calibration_images=images,
                                calibration_data=args.calibration_data))
        return 0
    if args.format == "onnx":
        _require("tf2onnx", "onnx")
        from tfcaption.export.onnx import export_run_onnx

        print(export_run_onnx(captioner, run_config, args.output, args.beam_size, args.max_steps, args.regions))
        return 0
    from tfcaption.export.saved_model import export_run

    path = export_run(captioner, run_config, args.export_root, args.name, version=args.version,
                      beam_size=args.beam_size, max_steps=args.max_steps, max_pixels=args.max_pixels,
                      prompts=args.prompt)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
