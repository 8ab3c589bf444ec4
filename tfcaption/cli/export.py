"""tfcaption-export: write a trained model as a TF Serving SavedModel (image bytes in, captions out)."""

import sys

from tfcaption.cli.common import ArgumentParser, one_line_errors, quiet_tensorflow

PROGRAM = "tfcaption-export"


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
    return parser


@one_line_errors(PROGRAM)
def main(argv=None):
    args = build_parser().parse_args(argv)
    quiet_tensorflow()
    from tfcaption.export.saved_model import export_run
    from tfcaption.training.run_directory import load_run

    captioner, run_config = load_run(args.model, weights=args.weights)
    path = export_run(captioner, run_config, args.export_root, args.name, version=args.version,
                      beam_size=args.beam_size, max_steps=args.max_steps, max_pixels=args.max_pixels,
                      prompts=args.prompt)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
