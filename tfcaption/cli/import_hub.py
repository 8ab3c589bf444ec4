"""tfcaption-import: write a BLIP captioning checkpoint from the Hugging Face Hub as a tfcaption run directory.

SOURCE is a directory in the Hub's layout or hf://OWNER/NAME[@REVISION] (fetched into huggingface_hub's cache
when online); the run directory it writes is read by every command that takes a run (`tfcaption-caption
--model OUT_DIR`, `tfcaption-evaluate`, `tfcaption-export`, `tfcaption.load`). The work is
`tfcaption.interop.hf.import_blip`.
"""

import sys

from tfcaption.cli.common import ArgumentParser, captured_native_stderr, one_line_errors, quiet_tensorflow

PROGRAM = "tfcaption-import"


def build_parser():
    parser = ArgumentParser(prog=PROGRAM, description=__doc__.split(":", 1)[1].split("\n")[0].strip())
    parser.add_argument("source", metavar="SOURCE",
                        help="a BLIP checkpoint: a directory in the Hub's layout, or hf://OWNER/NAME[@REVISION]")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="run directory to write")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    return parser


@one_line_errors(PROGRAM)
def main(argv=None):
    args = build_parser().parse_args(argv)
    quiet_tensorflow()
    from tfcaption.interop.hf.import_blip import check_out_dir, import_blip

    try:
        check_out_dir(args.out_dir, args.overwrite)  # before any reading
        with captured_native_stderr():
            captioner, run = import_blip(args.source, args.out_dir, overwrite=args.overwrite)
    except ValueError as error:
        raise ValueError(" ".join(str(error).split())) from None
    except (FileNotFoundError, FileExistsError) as error:
        raise type(error)(" ".join(str(error).split())) from None
    config = captioner.backbone.config
    print(f"Imported {args.source} ({captioner.backbone.count_params() / 1e6:.2f}M parameters, {config.vocab_size} "
          f"tokens, vision {config.image_encoder.num_layers} layers at {config.image_encoder.image_size} px, text "
          f"{config.decoder.num_layers} layers) to {run.path}")
    print(f"Caption with: tfcaption-caption IMAGES --model {run.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
