"""tfcaption-evaluate: caption dataset splits with a trained model and print the COCO metrics."""

import argparse
import sys

from tfcaption.cli.common import one_line_errors, quiet_tensorflow

PROGRAM = "tfcaption-evaluate"


def build_parser():
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("--model", default="runs/shapes-small", help="run directory (default runs/shapes-small)")
    parser.add_argument("--data", help="dataset spec (default: the one the model was trained on)")
    parser.add_argument("--splits", default=None, help="comma-separated splits (default: the run's eval splits)")
    parser.add_argument("--beam-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--weights", choices=["best", "latest"], default="best")
    parser.add_argument("--collapse-repeats", action="store_true",
                        help="collapse consecutive repeated words before scoring (the M2 reference evaluation)")
    parser.add_argument("--no-java", action="store_true", help="Python tokenisation, no METEOR")
    parser.add_argument("--no-blind", action="store_true", help="do not score the image-blind baseline")
    parser.add_argument("--output", default=None, help="JSON report path (default <model>/evaluation.json)")
    parser.add_argument("--no-xla", action="store_true")
    return parser


@one_line_errors(PROGRAM)
def main(argv=None):
    args = build_parser().parse_args(argv)
    quiet_tensorflow()
    import os

    from tfcaption.data.sources import resolve_dataset
    from tfcaption.evaluation import blind_baseline, evaluate_splits, write_json
    from tfcaption.metrics.coco import format_metrics_table
    from tfcaption.training.run_directory import load_run

    model, vocab, run_config = load_run(args.model, weights=args.weights)
    train = run_config.train
    spec = args.data or train.data
    data_dir = resolve_dataset(spec, train.resolved_data_root, train.dataset_options if not args.data else {})
    splits = args.splits.split(",") if args.splits else list(train.eval_splits)
    blind = None if args.no_blind else blind_baseline(data_dir)
    report, predictions = evaluate_splits(
        model, vocab, data_dir, splits, blind_caption=blind,
        beam_size=args.beam_size or train.eval_beam_size, max_steps=train.max_caption_words + 1,
        batch_size=args.batch_size or train.eval_batch_size, use_java=False if args.no_java else None,
        collapse_repeats=args.collapse_repeats, jit_compile=not args.no_xla,
    )
    if not report:
        raise ValueError(f"None of the splits {splits} exist in {data_dir}.")
    rows = {}
    for split, split_report in report.items():
        rows[f"{split}/model"] = split_report["model"]
        if "blind_baseline" in split_report:
            rows[f"{split}/blind"] = split_report["blind_baseline"]
    print(format_metrics_table(rows))
    output = args.output or os.path.join(args.model, "evaluation.json")
    write_json(output, {"report": report, "predictions": predictions, "data": spec})
    print(f"Report written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
