"""Reading back what a run wrote to TensorBoard."""

import os

import tensorflow as tf


def tensorboard_summaries(logs):
    """{tag: the last PNG} of the image summaries and {tag: the last text} of the text summaries in `logs`."""
    images, texts = {}, {}
    for name in sorted(os.listdir(logs)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(logs, name)):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                if plugin == "images":
                    images[value.tag] = tf.make_ndarray(value.tensor)[2]  # width, height, then the PNGs
                elif plugin == "text":
                    texts[value.tag] = tf.make_ndarray(value.tensor).item().decode()
    return images, texts
