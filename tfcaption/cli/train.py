"""tfcaption-train: build the dataset, train, evaluate, export, and say where everything is."""

import argparse
import sys
import time

from tfcaption.cli.common import apply_overrides, one_line_errors, quiet_tensorflow

PROGRAM = "tfcaption-train"


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Train a Meshed-Memory Transformer captioner from raw pixels, evaluate it and export it. "
        "With no arguments: the built-in shapes dataset, the CPU-sized 'small' preset.",
    )
    parser.add_argument("--config", help="run config (JSON or YAML) with 'model' and 'train' sections")
    parser.add_argument("--preset", default=None, help="model preset: small (default), m2, ...")
    parser.add_argument("--data", help="dataset spec: shapes (default), a directory made by tfcaption-prepare, or a "
                        "source (coco:ROOT, karpathy:FILE.json?images=DIR, tfds:coco_captions, folder:DIR), "
                        "prepared once into the data root")
    parser.add_argument("--output-dir", help="run directory (default runs/shapes-small); reruns resume")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--strategy", choices=["auto", "default", "mirrored", "multiworker", "tpu"])
    parser.add_argument("--no-xla", action="store_true", help="do not XLA-compile the train and decode steps")
    parser.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE", default=[],
                        help="override any config field, e.g. --set train.warmup_steps=500 --set model.dropout=0.2")
    return parser


def resolve_config(args):
    """Preset/config file, then a resumed run's config, then flags; checked for a consistent model."""
    from tfcaption.models.config import CaptionerConfig
    from tfcaption.training.config import RunConfig, TrainConfig
    from tfcaption.training.run_directory import RunDirectory

    if args.config:
        run_config = RunConfig.load(args.config)
    else:
        run_config = RunConfig(CaptionerConfig.from_preset(args.preset or "small"), TrainConfig())
    if args.preset and args.config:
        run_config.model = CaptionerConfig.from_preset(args.preset)
    flags = {
        "data": args.data, "output_dir": args.output_dir, "epochs": args.epochs, "batch_size": args.batch_size,
        "strategy": args.strategy,
    }
    for field, value in flags.items():
        if value is not None:
            setattr(run_config.train, field, value)
    if args.no_xla:
        run_config.train.jit_compile = False
    if args.no_export:
        run_config.train.export = False
    apply_overrides(run_config, args.set)
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

    from tfcaption.data.sources import resolve_dataset
    from tfcaption.data.tokenizer import Vocabulary
    from tfcaption.evaluation import (blind_baseline, evaluate_splits, evaluation_splits, training_captions,
                                      write_json)
    from tfcaption.export.saved_model import export_saved_model
    from tfcaption.metrics.coco import format_metrics_table
    from tfcaption.training.run_directory import RunDirectory
    from tfcaption.training.trainer import Trainer

    run_config = resolve_config(args)
    train = run_config.train
    run = RunDirectory(train.output_dir)
    print(f"Dataset: {train.data}", flush=True)
    data_dir = resolve_dataset(train.data, train.resolved_data_root, train.dataset_options)

    if run.exists():
        vocab = Vocabulary.load(run.vocab)
    else:
        vocab = Vocabulary.build(training_captions(data_dir), min_count=train.min_word_count)
    run_config.model = run_config.model.replace(
        vocab_size=vocab.size, max_length=max(run_config.model.max_length, train.max_caption_words + 2),
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
        model, vocab, data_dir, evaluation_splits(data_dir, train.eval_splits), blind_caption=blind,
        beam_size=train.eval_beam_size, max_steps=train.max_caption_words + 1, batch_size=train.eval_batch_size,
        jit_compile=train.jit_compile,
    )
    write_json(run.report, report)
    write_json(run.join("predictions.json"), predictions)
    rows = {}
    for split, split_report in report.items():
        rows[f"{split}/model"] = split_report["model"]
        rows[f"{split}/blind"] = split_report["blind_baseline"]
    print(format_metrics_table(rows))
    print(f"Blind baseline caption: {blind!r}")

    export_path = None
    if train.export:
        export_path = export_saved_model(
            model, vocab, train.export_root, train.export_name, beam_size=train.export_beam_size,
            max_steps=train.max_caption_words + 1, run_config=run_config,
        )
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
