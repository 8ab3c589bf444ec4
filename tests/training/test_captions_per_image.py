"""`train.captions_per_image`: each image encoded once for k of its captions, in the pipeline, the decoder
and the trainer."""

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.tiny import TINY_MODEL
from tfcaption.models import CaptionerBackbone, CaptionerConfig


@pytest.mark.parametrize("preset", ["small", "cptr_small"])  # meshed (gates, every level) and transformer
def test_k_captions_per_image_equal_the_decoder_on_k_copies_of_each_image(preset):
    config = CaptionerConfig.from_preset(preset, vocab_size=20, max_length=12, **{
        **TINY_MODEL, "encoder": {"num_layers": 2, "memory_slots": 4 if preset == "small" else 0}})
    model = CaptionerBackbone.from_model_config(config)
    images = tf.random.stateless_uniform((3, 32, 32, 3), (1, 2), 0, 255)
    tokens = tf.random.stateless_uniform((3, 4, 9), (3, 4), 2, 20, tf.int32)
    encoded, mask = model.encode(images)
    flat = tf.reshape(tokens, (12, 9))
    grouped = model.decoder(flat, encoded, mask, return_attention=True, captions_per_image=4)
    copies = model.decoder(flat, tf.repeat(encoded, 4, axis=0), None if mask is None else tf.repeat(mask, 4, 0),
                           return_attention=True)
    for a, b in zip(grouped, copies):
        if b is None:
            assert a is None
            continue
        assert a.shape == b.shape
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    # The backbone takes (B, k, T) tokens and gives (B, k, T, vocab) logits, image by image.
    logits = model({"images": images, "tokens": tokens})
    assert logits.shape == (3, 4, 9, 20)
    np.testing.assert_allclose(np.reshape(logits, (12, 9, 20)), np.asarray(copies[0]), atol=1e-6)


def _dataset(tmp_path, captions_per_image_in_data):
    """Images whose left half is bright and right half black (a flipped one the other way round), each
    with captions `img<i> <j> left|right` naming the image and the caption."""
    from tfcaption.data.records import write_shards

    examples = []
    for i in range(6):
        pixels = np.zeros((8, 8, 3), np.uint8)
        pixels[:, :4] = 40 * (i + 1)
        captions = [f"img{i} c{j} {'left' if j % 2 else 'right'}" for j in range(captions_per_image_in_data)]
        examples.append({"image_id": str(i), "image": tf.io.encode_png(pixels).numpy(), "captions": captions})
    write_shards(examples, str(tmp_path), "train", 2)
    return str(tmp_path), [c for e in examples for c in e["captions"]]


@pytest.mark.parametrize("in_data, k", [(5, 3), (2, 3)])  # fewer captions than k: they cycle
def test_the_pipeline_gives_each_image_k_of_its_own_captions_flipped_with_it(tmp_path, in_data, k):
    from tfcaption.data.pipeline import train_dataset
    from tfcaption.data.tokenizer import Vocabulary

    data_dir, captions = _dataset(tmp_path, in_data)
    vocab = Vocabulary.build(captions)
    batches = list(train_dataset(data_dir, "train", vocab, batch_size=2, max_length=5, image_size=8, seed=3,
                                 augment_flip=True, captions_per_image=k, shuffle_buffer=6))
    assert len(batches) == 3 and all(b["tokens"].shape == (2, k, 7) for b in batches)
    seen_flips, seen_orders = set(), set()
    for batch in batches:
        for image, rows in zip(batch["images"].numpy(), batch["tokens"].numpy()):
            words = [vocab.decode(row).split() for row in rows]
            assert len({w[0] for w in words}) == 1  # one image's captions
            caption_ids = [int(w[1][1:]) for w in words]
            assert len(set(caption_ids)) == min(k, in_data)  # without replacement, cycling when fewer
            flipped = image[:, :4].mean() < image[:, 4:].mean()
            seen_flips.add(bool(flipped))
            seen_orders.add(tuple(caption_ids))
            for j, w in zip(caption_ids, words):  # every caption of a mirrored image has left/right swapped
                original = "left" if j % 2 else "right"
                assert w[2] == ({"left": "right", "right": "left"}[original] if flipped else original)
    assert seen_flips == {True, False} and len(seen_orders) > 1


def test_xe_with_k_captions_per_image_trains_on_images_times_k_captions_a_step(tiny_shapes, tmp_path):
    from tfcaption.config import DataConfig, RunConfig, TrainConfig
    from tfcaption.data.pipeline import decoder_inputs
    from tfcaption.data.tokenizer import Vocabulary
    from tfcaption.evaluation import training_captions
    from tfcaption.training.trainer import Trainer, masked_cross_entropy

    vocab = Vocabulary.build(training_captions(tiny_shapes))
    config = CaptionerConfig.from_preset("small", vocab_size=vocab.size, max_length=12, **TINY_MODEL)
    train = TrainConfig(output_dir=str(tmp_path / "run"), epochs=1, batch_size=10, captions_per_image=5,
                        warmup_steps=2, jit_compile=False, val_images=4, tensorboard_images=0)
    trainer = Trainer(RunConfig(model=config, data=DataConfig(max_caption_words=8), train=train), tiny_shapes, vocab,
                      log=lambda *_: None)
    assert trainer.steps_per_epoch() == 48 // 2  # one pass over the 48 images, 2 a step
    batch = next(trainer._epoch_batches(0, 0))
    assert batch["images"].shape[0] == 2 and batch["tokens"].shape[:2] == (2, 5)
    # The step's loss is the token mean over all 10 captions, as for the same pairs with copied images.
    rows = tf.reshape(batch["tokens"], (10, -1))
    logits = trainer.model({"images": tf.repeat(batch["images"], 5, axis=0), **decoder_inputs(rows, vocab.pad_id)})
    total, count = masked_cross_entropy(rows[:, 1:], logits, vocab.pad_id)
    loss, step_count = trainer._train_step(batch)
    np.testing.assert_allclose(float(loss), float(total / count), rtol=1e-5)
    assert float(step_count) == float(count)
    history = trainer.fit()
    assert len(history) == 1 and np.isfinite(history[0]["train_loss"])
