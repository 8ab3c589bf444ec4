"""tfcaption-convert-m2: turn the M2 authors' released checkpoint and vocabulary into a tfcaption run directory.

Reads the PyTorch `.pth` file (legacy or zip serialisation) and the pickled `vocab.pkl` with
tfcaption's own restricted readers, so neither PyTorch nor the authors' code is needed, and writes a
run directory that every tfcaption tool loads (`load_run`, tfcaption-caption, tfcaption-evaluate,
tfcaption-export):

    OUT_DIR/config.json        RunConfig: the converted `m2_reference` model + evaluation settings
    OUT_DIR/vocab.txt          the released vocabulary, one token per line (ids unchanged)
    OUT_DIR/best.weights.h5    the weights
    OUT_DIR/conversion.json    where the weights came from (paths, sha256, sizes)

Decoding settings are the reference evaluation's: beam 5, 20 decoding steps (<eos> included), which
tfcaption stores as `max_caption_words` = 19 because it decodes `max_caption_words + 1` steps.
"""

import argparse
import hashlib
import json
import os
import sys

from tfcaption.cli.common import captured_native_stderr, one_line_errors, quiet_tensorflow

PROGRAM = "tfcaption-convert-m2"
REFERENCE_BEAM_SIZE = 5
REFERENCE_STEPS = 20


def build_parser():
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split(":", 1)[1].split("\n")[0].strip())
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


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _one_line(error):
    """The error's message on one line (the console contract of every tfcaption script)."""
    return " ".join(str(error).split())


def converted_run_config(model_config, out_dir, max_caption_words=REFERENCE_STEPS - 1):
    """A RunConfig for a converted checkpoint: its model, and the reference's evaluation settings.

    The training fields describe the authors' cross-entropy setup (batch 50, Adam eps 1e-8, warmup
    10000, words kept at count >= 5), so fine-tuning from the converted weights starts from the
    released recipe; `data` is empty because the model was trained on detection features, which
    are given per command (`--features`), not as a tfcaption records directory.
    """
    from tfcaption.training.config import RunConfig, TrainConfig

    train = TrainConfig(
        data="", output_dir=os.fspath(out_dir), model_name="m2_coco", batch_size=50,
        max_caption_words=max_caption_words,
        min_word_count=5, warmup_steps=10000, adam_epsilon=1e-8, label_smoothing=0.0, early_stopping_patience=5,
        augment_flip=False, eval_splits=("test",), eval_beam_size=REFERENCE_BEAM_SIZE, eval_batch_size=50,
        export_beam_size=REFERENCE_BEAM_SIZE,
    )
    return RunConfig(model=model_config, train=train)


def read_release(checkpoint, vocab_path):
    """`(state_dict, itos)` from the released files, read without PyTorch or the authors' code.

    Kept apart from the conversion so that unreadable inputs fail before the model is built.
    """
    from tfcaption.data.m2_vocab import load_m2_vocab
    from tfcaption.models.torch_checkpoint import load_state_dict

    for path, what in ((checkpoint, "checkpoint"), (vocab_path, "vocabulary")):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{what} file not found: {path}")
    return load_state_dict(checkpoint), load_m2_vocab(vocab_path)


def _check_out_dir(out_dir, overwrite):
    """OUT_DIR as a path, refusing to replace a run unless asked (checked before any work)."""
    path = os.fspath(out_dir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"{path} exists and is not a directory")
    existing = [n for n in ("config.json", "best.weights.h5") if os.path.exists(os.path.join(path, n))]
    if existing and not overwrite:
        raise FileExistsError(f"{path} already holds a run ({', '.join(existing)}); pass --overwrite to replace it")
    return path


def convert(checkpoint, vocab_path, out_dir, num_heads=8, max_caption_words=REFERENCE_STEPS - 1, overwrite=False):
    """Converts the released files into a run directory; returns `(model, run_directory)`.

    Raises CheckpointError / VocabularyError / ConversionError (all ValueError) naming the problem,
    FileNotFoundError for a missing input, FileExistsError when OUT_DIR already holds a run.
    """
    if max_caption_words < 1:
        raise ValueError(f"--max-caption-words must be >= 1, got {max_caption_words}")
    path = _check_out_dir(out_dir, overwrite)
    state_dict, itos = read_release(checkpoint, vocab_path)
    return write_run(state_dict, itos, path, checkpoint, vocab_path, num_heads, max_caption_words)


def write_run(state_dict, itos, out_dir, checkpoint, vocab_path, num_heads, max_caption_words):
    """Builds the model from the release (TensorFlow from here on) and writes the run directory."""
    from tfcaption.data.tokenizer import Vocabulary
    from tfcaption.models.m2_convert import convert_m2
    from tfcaption.training.run_directory import RunDirectory

    run = RunDirectory(out_dir)
    model = convert_m2(state_dict, itos, num_heads=num_heads)
    if max_caption_words + 1 > model.config.max_length:
        raise ValueError(f"--max-caption-words {max_caption_words} needs {max_caption_words + 1} decoding steps, but "
                         f"the checkpoint's position table allows {model.config.max_length}")
    vocab = Vocabulary(itos)  # refuses tokens vocab.txt cannot hold (whitespace), so ids stay aligned
    os.makedirs(run.path, exist_ok=True)
    converted_run_config(model.config, run.path, max_caption_words).save(run.config)
    vocab.save(run.vocab)
    model.save_weights(run.best_weights)
    provenance = {
        "source": "Meshed-Memory Transformer release (aimagelab/meshed-memory-transformer)",
        "checkpoint": os.path.abspath(checkpoint),
        "checkpoint_sha256": _sha256(checkpoint),
        "vocab": os.path.abspath(vocab_path),
        "vocab_sha256": _sha256(vocab_path),
        "num_heads": num_heads,
        "vocab_size": vocab.size,
        "parameters": int(model.count_params()),
        "decoding": {"beam_size": REFERENCE_BEAM_SIZE, "max_steps": max_caption_words + 1},
    }
    with open(run.join("conversion.json"), "w") as f:
        json.dump(provenance, f, indent=2, sort_keys=True)
    return model, run


@one_line_errors(PROGRAM)
def main(argv=None):
    args = build_parser().parse_args(argv)
    quiet_tensorflow()
    if args.max_caption_words < 1:
        raise ValueError(f"--max-caption-words must be >= 1, got {args.max_caption_words}")
    if args.num_heads < 1:
        raise ValueError(f"--num-heads must be >= 1, got {args.num_heads}")
    try:
        # CheckpointError, VocabularyError and ConversionError are ValueErrors whose message names
        # the file and the problem. (Importing tfcaption.models loads TensorFlow, hence the capture
        # around the readers too.)
        out_dir = _check_out_dir(args.out_dir, args.overwrite)
        with captured_native_stderr():
            state_dict, itos = read_release(args.checkpoint, args.vocab)
            model, run = write_run(state_dict, itos, out_dir, args.checkpoint, args.vocab, args.num_heads,
                                   args.max_caption_words)
    except ValueError as error:
        raise ValueError(_one_line(error)) from None
    except (FileNotFoundError, FileExistsError) as error:
        raise type(error)(_one_line(error)) from None
    config = model.config
    print(f"Converted {args.checkpoint} ({model.count_params() / 1e6:.2f}M parameters, {config.vocab_size} tokens, "
          f"{config.num_encoder_layers}+{config.num_decoder_layers} layers, d={config.hidden_dim}, "
          f"{config.memory_slots} memory slots) to {run.path}")
    print(f"Decoding: beam {REFERENCE_BEAM_SIZE}, {args.max_caption_words + 1} steps (the reference evaluation).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
