"""What a training step reads: the batch geometry of a phase and each epoch's batches in a seeded order.

XE reads (image, caption) pairs, or images with `captions_per_image` captions each; SCST reads images with
all their references (for the reward). Every worker of a multi-worker run reads the same seeded order and
keeps its share of each batch. A resumed epoch reads and drops the batches before its position, so pass
boundaries and seeds line up with an uninterrupted epoch.
"""

import tensorflow as tf

from tfcaption.data import pipeline
from tfcaption.training.strategy import is_single_device


class TrainBatches:
    """The training split of `data_dir` as a phase's steps read it.

    Args:
        data_dir: a prepared dataset directory; `manifest` its manifest.
        vocab: the `Vocabulary` (XE's captions are tokenised in the pipeline).
        data_config: the run's `DataConfig` (caption length, flips).
        strategy: the tf.distribute strategy the batches are distributed over.
        image_size: what the pipeline resizes to (None: region features).
        resample: how it resizes (the image encoder's `resample`).
    """

    def __init__(self, data_dir, manifest, vocab, data_config, strategy, image_size, resample="bilinear"):
        self.data_dir, self.manifest, self.vocab, self.data_config = data_dir, manifest, vocab, data_config
        self.strategy, self.image_size, self.resample = strategy, image_size, resample

    @staticmethod
    def captions_per_image(config):
        """Captions an image gives per step: SCST's samples, or XE's `captions_per_image` (1: pairs)."""
        return config.scst_samples if config.task == "scst" else config.captions_per_image

    def images_per_batch(self, config):
        """Images per step when an image comes with several captions (M2's SCST: 50 // 5 = 10)."""
        return max(1, config.batch_size // self.captions_per_image(config))

    def global_batch(self, config):
        """Captions per step: the batch, or images x their captions."""
        if self.captions_per_image(config) > 1:
            return self.images_per_batch(config) * self.captions_per_image(config)
        return config.batch_size

    def steps_per_epoch(self, config):
        if config.steps_per_epoch:
            return config.steps_per_epoch
        train = self.manifest["splits"]["train"]
        if self.captions_per_image(config) > 1:  # one pass over the images
            return max(1, train["images"] // self.images_per_batch(config))
        return max(1, train["captions"] // self.global_batch(config))

    def dataset(self, config, epoch):
        """One pass over the training split in epoch `epoch`'s seeded order, distributed."""
        if config.task == "scst":  # per image, with all its references for the reward
            dataset = pipeline.image_batches(self.data_dir, "train", self.images_per_batch(config), self.image_size,
                                             seed=config.seed + epoch, drop_remainder=True, resample=self.resample)
            if is_single_device(self.strategy):
                return dataset
        else:
            k = config.captions_per_image  # > 1: a batch of images, each with k captions
            dataset = pipeline.train_dataset(
                self.data_dir, "train", self.vocab, self.images_per_batch(config) if k > 1 else config.batch_size,
                self.data_config.max_caption_words, self.image_size, seed=config.seed + epoch,
                augment_flip=self.data_config.augment_flip, captions_per_image=k, resample=self.resample,
            )
        # Every worker reads the same seeded order and keeps its share of each batch (sharding by file would
        # need at least as many shards as workers).
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return self.strategy.experimental_distribute_dataset(dataset.with_options(options))

    def epoch_batches(self, config, epoch, start):
        """The epoch's batches from step `start` on, exactly as an uninterrupted epoch sees them (the
        batches before `start` are read and dropped, so pass boundaries and seeds line up)."""
        iterator, step = iter(self.dataset(config, epoch)), 0
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                # steps_per_epoch longer than one pass: start another pass with a fresh shuffle.
                iterator = iter(self.dataset(config, epoch + 1000 * (step + 1)))
                try:
                    batch = next(iterator)
                except StopIteration:
                    raise ValueError(f"{self.data_dir}: the train split gives no full batch of "
                                     f"{self.global_batch(config)} (too few decodable pairs).") from None
            if step >= start:
                yield batch
            step += 1
