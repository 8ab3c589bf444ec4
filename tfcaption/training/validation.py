"""Each epoch's validation (teacher-forced loss and CIDEr-D of greedy captions on the val split) and the
early-stopping record: the best weights by CIDEr-D, and the epochs since they improved."""

from tfcaption.data import pipeline
from tfcaption.decoding.captioning import caption_batches
from tfcaption.metrics.cider import CiderD


def validate(model, vocab, data_dir, eval_step, data_config, decode_config, image_size, jit_compile=True,
             val_images=0, resample="bilinear"):
    """(loss, CIDEr-D, results) on the val split: the loss teacher forced (`eval_step`, `make_eval_step`),
    CIDEr-D of greedy captions of the first `val_images` images (0: all); `results` are `caption_batches`'s
    with attention, for TensorBoard's figures. Images are resized to `image_size` with `resample`."""
    loss_sum, count = 0.0, 0.0
    batches = pipeline.train_dataset(
        data_dir, "val", vocab, decode_config.batch_size, data_config.max_caption_words, image_size, seed=0,
        augment_flip=False, drop_remainder=False, shuffle_buffer=1, resample=resample,
    )
    for batch in batches:
        s, c = eval_step(batch)
        loss_sum += float(s)
        count += float(c)
    cider, results = validation_cider(model, vocab, data_dir, data_config, decode_config, image_size, jit_compile,
                                      val_images, resample)
    return loss_sum / max(count, 1.0), cider, results


def validation_cider(model, vocab, data_dir, data_config, decode_config, image_size, jit_compile=True, val_images=0,
                     resample="bilinear"):
    """(CIDEr-D, results): `validate`'s CIDEr-D alone, of greedy captions of the first `val_images` val images
    (0: all), e.g. of a model before it is fine-tuned; `results` as `caption_batches` with attention."""
    results = caption_batches(
        model, vocab, pipeline.eval_dataset(data_dir, "val", decode_config.batch_size, image_size, resample),
        beam_size=1, max_steps=data_config.max_decode_steps, jit_compile=jit_compile,
        limit=val_images or None, return_attention=True,  # for TensorBoard's figures
    )
    references = [r["references"] for r in results]
    cider, _ = CiderD(references).score([r["caption"] for r in results], references)
    return float(cider), results


def keep_best(state, val_cider, has_val, model, best_weights):
    """Records an epoch's validation CIDEr-D in `state` and saves the model to `best_weights` when it
    improved (without a val split every epoch counts as improved: the last weights are kept). Returns
    whether it improved."""
    improved = val_cider > float(state.best_cider.numpy()) if has_val else True
    if improved:
        if has_val:
            state.best_cider.assign(val_cider)
        state.epochs_without_improvement.assign(0)
        model.save_weights(best_weights)
    else:
        state.epochs_without_improvement.assign_add(1)
    return improved
