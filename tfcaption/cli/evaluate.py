"""tfcaption-evaluate: caption dataset splits with a trained model and print the COCO metrics."""

import sys

from tfcaption.cli.common import ArgumentParser, one_line_errors, quiet_tensorflow
from tfcaption.cli.sampling import add_sampler_arguments, max_steps_from_args, sampler_from_args

PROGRAM = "tfcaption-evaluate"


def build_parser():
    parser = ArgumentParser(prog=PROGRAM, description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("--model", default="runs/shapes-small", help="run directory (default runs/shapes-small)")
    parser.add_argument("--data", help="dataset spec, e.g. a prepared directory or karpathy:dataset_coco.json?images=DIR "
                        "(default: the one the model was trained on)")
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
    parser.add_argument("--features", metavar="FILE.h5",
                        help="evaluate on precomputed region features (e.g. the M2 release's coco_detections.hdf5); "
                             "needs --annotations")
    parser.add_argument("--annotations", metavar="dataset_coco.json",
                        help="Karpathy split file giving the split's images and references (with --features)")
    parser.add_argument("--reference-mode", action="store_true",
                        help="with --features: the released beam-search loop (fixed steps, 0 after <eos>)")
    add_sampler_arguments(parser)
    return parser


@one_line_errors(PROGRAM)
def main(argv=None):
    args = build_parser().parse_args(argv)
    sampler = sampler_from_args(args, args.beam_size)
    max_steps = max_steps_from_args(args)
    quiet_tensorflow()
    if args.features or args.annotations:
        if sampler is not None:
            raise ValueError("--features decodes with beam search (--beam-size); the sampler flags apply to "
                             "dataset splits.")
        return evaluate_feature_file(args, max_steps)
    import os

    from tfcaption.data.catalog import resolve_dataset
    from tfcaption.evaluation import blind_baseline, evaluate_splits, evaluation_splits, report_rows, write_json
    from tfcaption.metrics.coco import format_metrics_table
    from tfcaption.training.run_directory import load_run

    captioner, run_config = load_run(args.model, weights=args.weights)
    data, decode = run_config.data, run_config.decode
    spec = args.data or data.spec
    data_dir = resolve_dataset(spec, data.root, data.options if not args.data else {})
    splits = args.splits.split(",") if args.splits else evaluation_splits(data_dir, decode.eval_splits)
    blind = None if args.no_blind else blind_baseline(data_dir)
    report, predictions = evaluate_splits(
        captioner, data_dir, splits, blind_caption=blind,
        beam_size=args.beam_size or decode.beam_size, sampler=sampler, max_steps=max_steps or data.max_decode_steps,
        batch_size=args.batch_size or decode.batch_size, use_java=False if args.no_java else None,
        collapse_repeats=args.collapse_repeats, jit_compile=not args.no_xla,
    )
    if not report:
        raise ValueError(f"None of the splits {splits} exist in {data_dir}.")
    print(format_metrics_table(report_rows(report)))
    output = args.output or os.path.join(args.model, "evaluation.json")
    write_json(output, {"report": report, "predictions": predictions, "data": spec})
    print(f"Report written to {output}")
    return 0


def evaluate_feature_file(args, max_steps=None):
    """--features/--annotations: COCO metrics on a Karpathy split, with and without collapsed repeats."""
    import json
    import os

    from tfcaption.interop.m2.captioning import evaluate_features, metrics_rows
    from tfcaption.interop.m2.features import FeaturesNotFoundError
    from tfcaption.metrics.coco import format_metrics_table

    if not (args.features and args.annotations):
        raise ValueError("--features and --annotations go together (region features + Karpathy dataset_coco.json).")
    splits = args.splits.split(",") if args.splits else ["test"]
    reports = {}
    for split in splits:
        try:
            reports[split] = evaluate_features(
                args.model, args.features, args.annotations, split=split, beam_size=args.beam_size,
                use_java=False if args.no_java else None, batch_size=args.batch_size or 50,
                reference_mode=args.reference_mode, jit_compile=not args.no_xla, weights=args.weights,
                max_steps=max_steps,
            )
        except FeaturesNotFoundError as error:  # a KeyError: give it the one-line treatment of ValueErrors
            raise ValueError(str(error)) from None
    rows = {}
    for report in reports.values():
        rows.update(metrics_rows(report))
    print(format_metrics_table(rows))
    output = args.output or os.path.join(args.model, "evaluation.json")
    with open(output, "w") as f:
        json.dump({"report": reports, "features": args.features, "annotations": args.annotations}, f, indent=2)
    print(f"Report written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
