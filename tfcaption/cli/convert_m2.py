"""tfcaption-convert-m2: turn the M2 authors' released checkpoint and vocabulary into a tfcaption run directory.

Reads the PyTorch `.pth` file and the pickled `vocab.pkl` without PyTorch or the authors' code and
writes a run directory that every tfcaption tool loads; the work is `tfcaption.interop.m2.convert`.
"""

import sys

from tfcaption.cli.common import ArgumentParser, captured_native_stderr, one_line_errors, quiet_tensorflow
from tfcaption.interop.m2 import REFERENCE_BEAM_SIZE, REFERENCE_STEPS

PROGRAM = "tfcaption-convert-m2"


def build_parser():
    parser = ArgumentParser(prog=PROGRAM, description=__doc__.split(":", 1)[1].split("\n")[0].strip())
    parser.add_argument("checkpoint", metavar="CHECKPOINT.pth", help="the released meshed_memory_transformer.pth")
    parser.add_argument("vocab", metavar="VOCAB.pkl", help="the released vocab.pkl")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="run directory to write")
    parser.add_argument("--num-heads", type=int, default=8,
                        help="attention heads (not recorded in the checkpoint's shapes; 8 for the released model)")
    parser.add_argument("--max-caption-words", type=int, default=REFERENCE_STEPS - 1,
                        help="longest caption in words; decoding runs this + 1 steps (<eos> included). "
                             f"Default {REFERENCE_STEPS - 1}: the reference's {REFERENCE_STEPS} steps")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in OUT_DIR")
    return parser


@one_line_errors(PROGRAM)
def main(argv=None):
    args = build_parser().parse_args(argv)
    quiet_tensorflow()
    if args.max_caption_words < 1:
        raise ValueError(f"--max-caption-words must be >= 1, got {args.max_caption_words}")
    if args.num_heads < 1:
        raise ValueError(f"--num-heads must be >= 1, got {args.num_heads}")
    from tfcaption.interop.m2.convert import check_out_dir, read_release, write_run

    try:
        # CheckpointError, VocabularyError and ConversionError are ValueErrors whose message names
        # the file and the problem. (Importing tfcaption.models loads TensorFlow, hence the capture
        # around the readers too.)
        out_dir = check_out_dir(args.out_dir, args.overwrite)
        with captured_native_stderr():
            state_dict, itos = read_release(args.checkpoint, args.vocab)
            model, run = write_run(state_dict, itos, out_dir, args.checkpoint, args.vocab, args.num_heads,
                                   args.max_caption_words)
    except ValueError as error:
        raise ValueError(" ".join(str(error).split())) from None
    except (FileNotFoundError, FileExistsError) as error:
        raise type(error)(" ".join(str(error).split())) from None
    config = model.config
    print(f"Converted {args.checkpoint} ({model.count_params() / 1e6:.2f}M parameters, {config.vocab_size} tokens, "
          f"{config.encoder.num_layers}+{config.decoder.num_layers} layers, d={config.hidden_dim}, "
          f"{config.encoder.memory_slots} memory slots) to {run.path}")
    print(f"Decoding: beam {REFERENCE_BEAM_SIZE}, {args.max_caption_words + 1} steps (the reference evaluation).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
