"""Where a training process writes. The chief (the only process of most runs) writes the run directory:
config.json and vocab.txt at the start, the best weights, history.jsonl and TensorBoard's logs. Another
worker of a multi-worker run writes its copies to a temporary directory of its own, deleted at the end
(the run directory must be one path every worker shares)."""

import json
import os
import shutil
import tempfile

import tensorflow as tf

from tfcaption.data.vocabulary import save_vocabulary
from tfcaption.training.strategy import worker_task


class RunOutputs:
    """Opens a run's outputs for this process: the chief saves `run_config` and `vocab` into `run`
    (a `RunDirectory`) at once."""

    def __init__(self, run, run_config, vocab, strategy, chief):
        self.run, self.chief, self.worker_dir = run, chief, None
        if chief:
            tf.io.gfile.makedirs(run.path)
            run_config.save(run.config)
            save_vocabulary(vocab, run.vocab)  # a BertTokenizer's settings go beside it
            self.best_weights = run.best_weights
        else:  # another worker: its own copies, deleted after each save
            self.worker_dir = tempfile.mkdtemp(prefix=f"tfcaption-worker{worker_task(strategy)[1]}-")
            self.best_weights = os.path.join(self.worker_dir, "best.weights.h5")

    def summary_writer(self):
        """TensorBoard's writer: the run's logs/ for the chief, a no-op writer elsewhere."""
        return tf.summary.create_file_writer(self.run.logs) if self.chief else tf.summary.create_noop_writer()

    def append_history(self, record):
        """One epoch's record as a line of history.jsonl (the chief's)."""
        if not self.chief:
            return
        with tf.io.gfile.GFile(self.run.join("history.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")

    def close(self):
        if self.worker_dir is not None:
            shutil.rmtree(self.worker_dir, ignore_errors=True)
