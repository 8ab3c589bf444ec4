"""tfcaption-train: build the dataset, train, evaluate, export, and say where everything is."""

import argparse
import os
import re
import sys
import time

from tfcaption.cli.common import apply_overrides, one_line_errors, quiet_tensorflow

PROGRAM = "tfcaption-train"


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Train a transformer captioner (M2, CPTR, spatial self-attention; from raw pixels or region "
        "features), evaluate it and export it. With no arguments: the built-in shapes dataset, the CPU-sized "
        "'small' preset.",
    )
    parser.add_argument("--config", help="run config (JSON or YAML) with model, data, train, decode and export "
                        "sections")
    from tfcaption.models.config import PRESETS

    parser.add_argument("--preset", default=None, choices=sorted(PRESETS),
                        help="model preset (default small); see the README's presets table")
    parser.add_argument("--data", help="dataset spec: shapes (default), a directory made by tfcaption-prepare, or a "
                        "source (coco:ROOT, karpathy:FILE.json?images=DIR, tfds:coco_captions, folder:DIR, "
                        "features:FILE.hdf5?captions=dataset_coco.json for region-feature presets), prepared once "
                        "into the data root")
    parser.add_argument("--output-dir", help="run directory (default runs/DATASET-PRESET, e.g. runs/shapes-small, "
                        "runs/shapes-cptr_small); reruns resume")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--strategy", choices=["auto", "default", "mirrored", "multiworker", "tpu"])
    parser.add_argument("--no-xla", action="store_true", help="do not XLA-compile the train and decode steps")
    parser.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE", default=[],
                        help="override any config field, e.g. --set train.warmup_steps=500 --set model.dropout=0.2 "
                        "--set model.encoder.num_layers=4 --set data.max_caption_words=20")
    return parser


def default_output_dir(data_spec, preset):
    """`runs/<dataset>-<preset>`: the dataset named by its source scheme (`coco:...` -> coco) or its
    directory's name, e.g. runs/shapes-small (the default run), runs/coco-m2."""
    scheme = re.match(r"^([a-z]+):", data_spec)
    name = scheme.group(1) if scheme else os.path.basename(os.path.normpath(data_spec))
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-") or "data"
    return os.path.join("runs", f"{name}-{preset}")


def _sets(args, field):
    return any(s.startswith(field + "=") for s in args.set)


def resolve_config(args):
    """Preset/config file, then a resumed run's config, then flags; checked for a consistent model."""
    from tfcaption.config import RunConfig
    from tfcaption.models.config import CaptionerConfig
    from tfcaption.training.run_directory import RunDirectory

    if args.config:
        run_config = RunConfig.load(args.config)
    else:
        run_config = RunConfig(model=CaptionerConfig.from_preset(args.preset or "small"))
    if args.preset and args.config:
        run_config.model = CaptionerConfig.from_preset(args.preset)
    flags = {
        "data.spec": args.data, "train.output_dir": args.output_dir, "train.epochs": args.epochs,
        "train.batch_size": args.batch_size, "train.strategy": args.strategy,
        "train.jit_compile": False if args.no_xla else None, "export.enabled": False if args.no_export else None,
    }
    apply_overrides(run_config, [(key, value) for key, value in flags.items() if value is not None] + args.set)
    if not args.config:  # each preset its own run and SavedModel, so another --preset never resumes this one
        preset = args.preset or "small"
        if not (args.output_dir or _sets(args, "train.output_dir")):
            run_config.train.output_dir = default_output_dir(run_config.data.spec, preset)
        if preset != "small" and run_config.data.spec == "shapes" and not _sets(args, "export.model_name"):
            run_config.export.model_name = f"shapes_{preset}"
    run = RunDirectory(run_config.train.output_dir)
    if run.exists():
        saved = RunConfig.load(run.config)
        # The model must match to resume; training fields (epochs, ...) may change between runs.
        requested = run_config.model.replace(vocab_size=saved.model.vocab_size, max_length=saved.model.max_length)
        if requested != saved.model:
            raise ValueError(
                f"{run.path} holds a run with a different model config; use another --output-dir to start anew."
            )
        run_config.model = saved.model
    return run_config


@one_line_errors(PROGRAM)
def main(argv=None):
    args = build_parser().parse_args(argv)
    quiet_tensorflow()
    started = time.time()

    from tfcaption.data.catalog import resolve_dataset
    from tfcaption.data.vocabulary import build_vocabulary, load_vocabulary
    from tfcaption.evaluation import (blind_baseline, evaluate_splits, evaluation_splits, report_rows,
                                      training_captions, write_json)
    from tfcaption.export.saved_model import export_run
    from tfcaption.metrics.coco import format_metrics_table
    from tfcaption.training.run_directory import RunDirectory
    from tfcaption.training.trainer import Trainer

    run_config = resolve_config(args)
    data, decode = run_config.data, run_config.decode
    run = RunDirectory(run_config.train.output_dir)
    print(f"Dataset: {data.spec}", flush=True)
    data_dir = resolve_dataset(data.spec, data.root, data.options)

    if run.exists():
        vocab = load_vocabulary(run.vocab, data.tokenizer)
    else:
        vocab = build_vocabulary(data.tokenizer, training_captions(data_dir), min_count=data.min_word_count,
                                 max_size=data.vocab_size or None)
    run_config.model = run_config.model.replace(
        vocab_size=vocab.size, max_length=max(run_config.model.max_length, data.max_tokens),
        pad_id=vocab.pad_id, bos_id=vocab.bos_id, eos_id=vocab.eos_id,
    )
    print(f"Vocabulary: {vocab.size} tokens. Run directory: {run.path}", flush=True)

    trainer = Trainer(run_config, data_dir, vocab)
    trainer.fit()
    model = trainer.model

    print("Evaluating ...", flush=True)
    blind = blind_baseline(data_dir)
    write_json(run.blind_baseline, {"caption": blind})
    report, predictions = evaluate_splits(
        model, vocab, data_dir, evaluation_splits(data_dir, decode.eval_splits), blind_caption=blind,
        beam_size=decode.beam_size, max_steps=data.max_decode_steps, batch_size=decode.batch_size,
        jit_compile=run_config.train.jit_compile, use_java=None if decode.java else False,
    )
    write_json(run.report, report)
    write_json(run.join("predictions.json"), predictions)
    print(format_metrics_table(report_rows(report)))
    print(f"Blind baseline caption: {blind!r}")

    export_path = export_run(model, vocab, run_config) if run_config.export.enabled else None
    minutes = (time.time() - started) / 60
    print(f"\nRun directory:   {run.path}")
    print(f"Report:          {run.report}")
    print(f"TensorBoard:     tensorboard --logdir {run.logs}")
    if export_path:
        print(f"SavedModel:      {export_path}")
    print(f"Total time:      {minutes:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
