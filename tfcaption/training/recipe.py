"""The whole of `tfcaption-train` as one library call: `tfcaption.train(run_config)`.

```
run config --resolve_run--> (a resumed run's model, or a pretrained backbone's sizes from its file)
   dataset (built or prepared once) -> vocabulary (from the training captions, or the run's) -> Trainer.fit
   -> evaluation of every requested split with the blind baseline -> report.json, predictions.json
   -> SavedModel export
```
"""

import dataclasses
import os
import time

from tfcaption.config import RunConfig


@dataclasses.dataclass
class TrainResult:
    """What a training run produced: where, its numbers, and the trained model to use right away."""

    run_dir: str
    report: dict  # split -> metrics (as report.json)
    history: list  # one dict per epoch trained in this call (as history.jsonl)
    blind_caption: str
    export_path: str  # "" when the export is disabled
    model: object  # the trained `CaptionerBackbone`
    vocab: object
    minutes: float
    captioner: object = None  # the `tfcaption.ImageCaptioner` of the run (None on a multi-worker run's other workers)


def resolve_run(run_config):
    """The run config to train with.

    An existing run directory is resumed: the requested model must be the one it trained (training
    fields may change between calls), and its saved model config (vocabulary size, sizes read from a
    checkpoint) is used. A new run with `train.init_from` takes that run's model config (and its
    tokenizer); otherwise a pretrained backbone's sizes come from its file (a missing file is a one-line
    error before any work).

    The init run's model is taken with the requested fine-tuning fields
    (`tfcaption.models.config.FINE_TUNING_FIELDS`: precision, dropout, how much of a pretrained image
    encoder trains) where the requested model is that model but for them (a config, or `tfcaption-train
    --init-from`, that names it); otherwise with the requested precision only. A fine-tuned run resumes
    like any other: its saved model is compared with that one.

    Raises:
        ValueError: the run directory holds a run with another model config.
        FileNotFoundError: the pretrained weights are neither on disk nor downloadable.
    """
    from tfcaption.models.config import with_fine_tuning_fields
    from tfcaption.models.pretrained import with_checkpoint_sizes, with_sizes_of
    from tfcaption.training.run_directory import RunDirectory

    run = RunDirectory(run_config.train.output_dir)
    init = run_config.train.init_from
    if init:  # the model (and, in `train`, the vocabulary) come with the weights
        if os.path.abspath(init) == os.path.abspath(run.path):
            raise ValueError(f"train.init_from {init} is the run directory itself; train into another one.")
        saved = load_init_run(init)
        requested = run_config.model
        if with_fine_tuning_fields(requested, saved.model) == saved.model:
            run_config.model = with_fine_tuning_fields(saved.model, requested)
        else:  # another model (a preset's): the precision is this run's (a machine's choice), not the weights'
            run_config.model = saved.model.replace(dtype_policy=requested.dtype_policy)
        run_config.data.tokenizer = saved.data.tokenizer
    if not run.exists():
        if not init:
            run_config.model = with_checkpoint_sizes(run_config.model)
        return run_config
    saved = RunConfig.load(run.config)
    policy = run_config.model.dtype_policy  # "auto": continue in the precision the run chose
    requested = run_config.model.replace(vocab_size=saved.model.vocab_size, max_length=saved.model.max_length,
                                         dtype_policy=saved.model.dtype_policy)
    if with_sizes_of(requested, saved.model) != saved.model:
        raise ValueError(f"{run.path} holds a run with a different model config; use another output directory "
                         f"(--output-dir) to start anew.")
    run_config.model = saved.model if policy == "auto" else saved.model.replace(dtype_policy=policy)
    return run_config


def load_init_run(path):
    """The `RunConfig` of `train.init_from`'s run directory.

    Raises:
        FileNotFoundError: one line, when `path` is not a run directory (no config.json and vocab.txt).
    """
    from tfcaption.training.run_directory import RunDirectory

    init_run = RunDirectory(path)
    if not init_run.exists():
        raise FileNotFoundError(f"train.init_from {path} is not a tfcaption run directory (it has no config.json "
                                f"and vocab.txt; a Hugging Face checkpoint is imported first: tfcaption-import "
                                f"SOURCE RUN_DIR).")
    return RunConfig.load(init_run.config)


def train(run_config, log=print, strategy=None):
    """Trains, evaluates and exports as `tfcaption-train` does, resuming a run directory that exists.

    Args:
        run_config: a `tfcaption.config.RunConfig` (e.g. `RunConfig.from_preset("small")`); it is
            updated in place with what the run fixes (vocabulary size, token ids, sizes from files).
        log: a print-like function for progress lines and the metrics table.
        strategy: a tf.distribute strategy already made (a notebook's TPUStrategy, say); default: the one
            `run_config.train.strategy` names.

    Returns:
        A `TrainResult`.
    """
    from tfcaption.data.catalog import resolve_dataset
    from tfcaption.data.vocabulary import build_vocabulary, load_vocabulary
    from tfcaption.evaluation import (blind_baseline, evaluate_splits, evaluation_splits, report_rows,
                                      training_captions, write_json)
    from tfcaption.export.saved_model import export_run
    from tfcaption.metrics.coco import format_metrics_table
    from tfcaption.models.image_captioner import ImageCaptioner
    from tfcaption.training.run_directory import RunDirectory
    from tfcaption.training.trainer import Trainer

    started = time.time()
    run_config = resolve_run(run_config)
    data, decode = run_config.data, run_config.decode
    run = RunDirectory(run_config.train.output_dir)
    log(f"Dataset: {data.spec}")
    data_dir = resolve_dataset(data.spec, data.root, data.options)
    if run.exists() or run_config.train.init_from:
        vocab = load_vocabulary(RunDirectory(run.path if run.exists() else run_config.train.init_from).vocab,
                                data.tokenizer)
    else:
        vocab = build_vocabulary(data.tokenizer, training_captions(data_dir), min_count=data.min_word_count,
                                 max_size=data.vocab_size or None)
    if run_config.train.init_from and data.max_tokens > run_config.model.max_length:
        raise ValueError(f"data.max_caption_words {data.max_caption_words} needs {data.max_tokens} token positions; "
                         f"the model of {run_config.train.init_from} has {run_config.model.max_length}: set "
                         f"data.max_caption_words <= {run_config.model.max_length - 2}.")
    run_config.model = run_config.model.replace(
        vocab_size=vocab.size, max_length=max(run_config.model.max_length, data.max_tokens))
    log(f"Vocabulary: {vocab.size} tokens. Run directory: {run.path}")

    trainer = Trainer(run_config, data_dir, vocab, strategy=strategy, log=log)
    run_config.model = trainer.run_config.model  # what the run fixed (the resolved precision), as documented above
    history = trainer.fit()
    model = trainer.model
    if not trainer.chief:  # a multi-worker run's other workers: the chief evaluates, reports and exports
        return TrainResult(run.path, {}, history, "", "", model, vocab, (time.time() - started) / 60)

    log("Evaluating ...")
    blind = blind_baseline(data_dir)
    write_json(run.blind_baseline, {"caption": blind})
    captioner = ImageCaptioner.from_backbone(model, vocab, run_config)  # the task the CLIs load this run as
    report, predictions = evaluate_splits(
        captioner, data_dir, evaluation_splits(data_dir, decode.eval_splits), blind_caption=blind,
        beam_size=decode.beam_size, max_steps=data.max_decode_steps, batch_size=decode.batch_size,
        jit_compile=run_config.train.jit_compile, use_java=None if decode.java else False, log=log,
    )
    write_json(run.report, report)
    write_json(run.join("predictions.json"), predictions)
    log(format_metrics_table(report_rows(report)))
    log(f"Blind baseline caption: {blind!r}")

    export_path = export_run(captioner, run_config) if run_config.export.enabled else ""
    return TrainResult(run.path, report, history, blind, export_path, model, vocab, (time.time() - started) / 60,
                       captioner)
