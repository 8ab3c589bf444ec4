"""tfcaption-train: build the dataset, train, evaluate, export, and say where everything is."""

import functools
import os
import sys

from tfcaption.cli.common import ArgumentParser, apply_overrides, one_line_errors, quiet_tensorflow

PROGRAM = "tfcaption-train"


def build_parser():
    parser = ArgumentParser(
        prog=PROGRAM,
        description="Train a transformer captioner (M2, CPTR, spatial self-attention; from raw pixels or region "
        "features), evaluate it and export it. With no arguments: the built-in shapes dataset, the CPU-sized "
        "'small' preset (--list-presets shows every preset).",
    )
    parser.add_argument("--config", help="run config (JSON or YAML) with model, data, train, decode and export "
                        "sections")
    from tfcaption.models.presets import DEFAULT_PRESET, PRESETS

    parser.add_argument("--preset", default=None, choices=sorted(PRESETS), metavar="NAME",
                        help=f"model preset and the run settings its paper fixes (default {DEFAULT_PRESET}): "
                        f"{', '.join(sorted(PRESETS))}; --list-presets describes them, docs/guides/presets.md "
                        "explains them")
    parser.add_argument("--list-presets", action="store_true",
                        help="print the presets (input, parameters, paper, description, run settings) and exit")
    parser.add_argument("--data", help="dataset spec: shapes (default), a directory made by tfcaption-prepare, or a "
                        "source (coco:ROOT, karpathy:FILE.json?images=DIR, tfds:coco_captions, folder:DIR, "
                        "features:FILE.hdf5?captions=dataset_coco.json for region-feature presets), prepared once "
                        "into the data root")
    parser.add_argument("--output-dir", help="run directory (default runs/DATASET-PRESET, e.g. runs/shapes-small, "
                        "runs/shapes-cptr_small); reruns resume")
    parser.add_argument("--init-from", metavar="RUN_DIR", help="start from another run's model, vocabulary and best "
                        "weights (a tfcaption run, a converted M2 checkpoint or an imported BLIP checkpoint) to "
                        "fine-tune; of the model only model.dropout, model.dtype_policy and the image encoder's "
                        "train_backbone, trainable_blocks, backbone_lr_multiplier may be set. An imported run "
                        "(tfcaption-import) trains XE then SCST without flips unless --task, train.phases or "
                        "data.augment_flip say otherwise. The default run directory is then "
                        "runs/DATASET-PRESET-from-NAME")
    parser.add_argument("--task", choices=_choices("task"), help="train with this task only (no phases): xe, "
                        "cross-entropy (the default run's); scst, self-critical sequence training with a CIDEr-D "
                        "reward, e.g. --init-from an XE run. The m2* presets run both, XE then SCST (train.phases)")
    parser.add_argument("--epochs", type=int, help="epochs (of each phase that does not set its own)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--time-budget", type=float, metavar="MINUTES",
                        help="shorten the epochs so that the training steps take about MINUTES on this machine, "
                        "at the rate the first steps measure (train.time_budget_minutes; validation, evaluation "
                        "and export come on top)")
    parser.add_argument("--strategy", choices=_choices("strategy"))
    parser.add_argument("--no-xla", action="store_true", help="do not XLA-compile the train and decode steps")
    parser.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE", default=[],
                        help="override any config field, e.g. --set train.warmup_steps=500 --set model.dropout=0.2 "
                        "--set model.encoder.num_layers=4 --set data.max_caption_words=20")
    return parser


def _choices(field):
    """The choices of a `train` field, from its annotation: the flag and `--set train.FIELD` take the same."""
    import typing

    from tfcaption.config import TrainConfig
    from tfcaption.config_fields import field_types

    return typing.get_args(field_types(TrainConfig)[field])


def _sets(args, field):
    return any(s.startswith(field + "=") for s in args.set)


# An imported checkpoint's run (tfcaption-import) fine-tunes as the m2 presets train, XE then SCST, and without
# flips, as BLIP's image processor feeds it; each is a default that --task / --set replace.
IMPORTED_RUN_DEFAULTS = {"train.phases": [{"task": "xe"}, {"task": "scst"}], "data.augment_flip": False}


def _init_from_defaults(run_config, args):
    """With --init-from (and no --config): the init run's model under the --set model fields, which may only be
    its fine-tuning fields (one line naming any other), and an imported run's `IMPORTED_RUN_DEFAULTS`."""
    from tfcaption.interop.hf.import_blip import IMPORT_RECORD
    from tfcaption.models.config import FINE_TUNING_FIELDS, FINE_TUNING_PART_FIELDS, with_fine_tuning_fields
    from tfcaption.training.recipe import load_init_run

    init = run_config.train.init_from
    saved = load_init_run(init)
    defaults = []
    if os.path.isfile(os.path.join(init, IMPORT_RECORD)):
        defaults = [(key, value) for key, value in IMPORTED_RUN_DEFAULTS.items()
                    if not _sets(args, key) and not (key == "train.phases" and args.task)]
    apply_overrides(run_config, defaults)
    requested = run_config.model
    run_config.model = saved.model.replace(dtype_policy=requested.dtype_policy)
    apply_overrides(run_config, [s for s in args.set if s.startswith("model.")])
    architecture = with_fine_tuning_fields(run_config.model, saved.model)
    if architecture != saved.model:
        allowed = [f"model.{f}" for f in FINE_TUNING_FIELDS] + [f"model.image_encoder.{f}"
                                                                 for f in FINE_TUNING_PART_FIELDS]
        changed = sorted(_changed_fields(architecture.to_dict(), saved.model.to_dict(), "model"))
        raise ValueError(f"{', '.join(changed)}: the model is that of {init} (--init-from); a fine-tuning run may "
                         f"set only {', '.join(allowed)}.")


def _changed_fields(values, saved, prefix):
    """The dotted names of the fields whose values differ between two config dicts."""
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(saved.get(key), dict):
            yield from _changed_fields(value, saved[key], f"{prefix}.{key}")
        elif value != saved.get(key):
            yield f"{prefix}.{key}"


def resolve_config(args):
    """Preset/config file, then flags, then the run to resume (`tfcaption.training.recipe.resolve_run`)."""
    from tfcaption.config import RunConfig, default_output_dir
    from tfcaption.models.config import CaptionerConfig
    from tfcaption.models.presets import DEFAULT_PRESET
    from tfcaption.training.recipe import resolve_run

    if args.config:
        run_config = RunConfig.load(args.config)
    else:
        run_config = RunConfig.from_preset(args.preset or DEFAULT_PRESET)
    if args.preset and args.config:
        run_config.model = CaptionerConfig.from_preset(args.preset)
    flags = {
        "data.spec": args.data, "train.output_dir": args.output_dir, "train.epochs": args.epochs,
        "train.batch_size": args.batch_size, "train.strategy": args.strategy,
        "train.jit_compile": False if args.no_xla else None, "export.enabled": False if args.no_export else None,
        "train.init_from": args.init_from, "train.task": args.task, "train.time_budget_minutes": args.time_budget,
    }
    if args.task:  # one task: the preset's phases (m2*: XE then SCST) give way
        run_config.train.phases = []
    flags = [(key, value) for key, value in flags.items() if value is not None]
    fine_tuning = not args.config and (args.init_from or _sets(args, "train.init_from"))
    # fine-tuning: the model sets apply to the init run's model (_init_from_defaults), not the preset's
    apply_overrides(run_config, flags + [s for s in args.set if not (fine_tuning and s.startswith("model."))])
    if fine_tuning and run_config.train.init_from:
        _init_from_defaults(run_config, args)
    if not args.config:  # each preset its own run and SavedModel, so another --preset never resumes this one
        preset = args.preset or DEFAULT_PRESET
        if not (args.output_dir or _sets(args, "train.output_dir")):
            run_config.train.output_dir = default_output_dir(run_config.data.spec, preset)
            if run_config.train.init_from:  # a fine-tuned run never resumes (or overwrites) its start
                name = os.path.basename(os.path.normpath(run_config.train.init_from))
                run_config.train.output_dir += f"-from-{name}"
        # the default preset's shapes export keeps its first name (RunConfig.export_name: shapes_m2_small)
        if preset != DEFAULT_PRESET and run_config.data.spec == "shapes" and not _sets(args, "export.model_name"):
            run_config.export.model_name = f"shapes_{preset}"
    return resolve_run(run_config)


@one_line_errors(PROGRAM)
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.list_presets:  # plain data: no TensorFlow
        from tfcaption.models.presets import format_presets

        print(format_presets())
        return 0
    quiet_tensorflow()

    from tfcaption.training.interruption import TrainingInterrupted
    from tfcaption.training.recipe import train

    try:
        result = train(resolve_config(args), log=functools.partial(print, flush=True))
    except TrainingInterrupted as stopped:
        print(f"{PROGRAM}: {stopped}", file=sys.stderr)
        return stopped.exit_code
    print(f"\nRun directory:   {result.run_dir}")
    print(f"Report:          {os.path.join(result.run_dir, 'report.json')}")
    print(f"TensorBoard:     tensorboard --logdir {os.path.join(result.run_dir, 'logs')}")
    if result.export_path:
        print(f"SavedModel:      {result.export_path}")
    print(f"Total time:      {result.minutes:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
