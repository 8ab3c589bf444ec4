"""What TensorBoard shows of a run: each epoch's scalars (losses, validation CIDEr-D, speed, SCST's reward)
and a few validation images, each with its generated caption, its reference captions and the
words-to-image attention figure, rewritten every epoch so the Images tab's slider shows the model learning
where to look."""

import io

import numpy as np
import tensorflow as tf

from tfcaption.data import pipeline
from tfcaption.decoding.captioning import attention_results, display_image


def validation_examples(model, vocab, results, data_dir, count=3, split="val"):
    """The first `count` of `results` (validation captions from `caption_batches(...,
    return_attention=True)`, in `eval_dataset` order) as `tfcaption.load(...).caption_with_attention`
    gives them (`caption`, `words`, `attention`, `gates`, `image`), plus `image_id` and `references`."""
    results = results[:count]
    if not results:
        return []
    grid, images = model.token_grid, None
    if grid is not None:  # the pixels the model saw, decoded again (no model call)
        batch = next(iter(pipeline.eval_dataset(data_dir, split, len(results), model.image_encoder.image_size,
                                                model.image_encoder.resample)))
        images = [display_image(image) for image in np.asarray(batch[model.input_key])]
    examples = attention_results(
        [r["caption"] for r in results], [r["score"] for r in results], [np.asarray(r["tokens"]) for r in results],
        [r["attention"] for r in results], [r["gates"] for r in results] if model.decoder.has_gates else None,
        images, None if grid is None else (grid.rows, grid.cols, grid.prefix), vocab.tokens, vocab.eos_id)
    for example, result in zip(examples, results):
        example.update(image_id=result["image_id"], references=result["references"])
    return examples


SCALARS = ("train_loss", "val_loss", "val_cider_d", "examples_per_second")
SCST_SCALARS = ("reward", "baseline")  # logged as scst_reward, scst_baseline


def write_epoch(writer, record, examples=None):
    """An epoch's scalars from its `record` (as history.jsonl's) and, when given, its validation `examples`
    (`validation_examples`; None: none, another worker's), at step `record["epoch"]`."""
    with writer.as_default(step=record["epoch"]):
        for key in SCALARS + SCST_SCALARS:
            if key in record:
                tf.summary.scalar(f"scst_{key}" if key in SCST_SCALARS else key, record[key])
        if examples is not None:
            write_validation_examples(examples, record["epoch"])
    writer.flush()


def write_validation_examples(examples, step):
    """Writes `examples` to the default summary writer at `step`: one attention figure per image
    (`val_attention/<i>`, pixel models) and one text table of generated against reference captions. An empty
    caption (the model emitted <eos> first, as early epochs may) is a row "*(empty caption)*" and a figure of
    the image alone."""
    from tfcaption.viz.attention import EMPTY_CAPTION, attention_figure

    rows = ["| image | generated | references |", "|---|---|---|"]
    for i, example in enumerate(examples):
        references = " / ".join(example["references"])
        rows.append(f"| {example['image_id']} | {example['caption'] or f'*{EMPTY_CAPTION}*'} | {references} |")
        if example.get("image") is None:
            continue  # region features have no pixels to draw on
        buffer = io.BytesIO()
        attention_figure(example, buffer, show_gates=example.get("gates") is not None, max_words=12)
        png = tf.io.decode_png(buffer.getvalue(), channels=3)
        tf.summary.image(f"val_attention/{i}", png[None], step=step,
                         description=f"{example['image_id']}: {example['caption']}")
    tf.summary.text("val_examples", "\n".join(rows), step=step)
