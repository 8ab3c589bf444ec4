"""Captioning a whole evaluation dataset: images in, caption strings out."""

import numpy as np

from tfcaption.decoding.generate import compiled_generator


def caption_batches(model, vocab, batches, beam_size=1, max_steps=None, jit_compile=True, limit=None, **options):
    """Decodes every batch of an `eval_dataset` and detokenises on the host.

    Strings never enter the compiled function: it maps images to token ids,
    and the vocabulary turns ids into words here.

    Returns a list of dicts `{"image_id", "caption", "score", "references",
    "scene"}` in dataset order, stopping after `limit` images if given.
    """
    generator = compiled_generator(model, beam_size, max_steps, jit_compile=jit_compile, **options)
    results = []
    for batch in batches:
        outputs = generator(batch[model.image_key])
        tokens = outputs["tokens"].numpy()
        scores = outputs["scores"].numpy()
        ids = batch["image_id"].numpy()
        references = batch["captions"].numpy() if "captions" in batch else [[]] * len(ids)
        scenes = batch["scene"].numpy() if "scene" in batch else [b""] * len(ids)
        for i in range(len(ids)):
            results.append(
                {
                    "image_id": ids[i].decode("utf-8"),
                    "caption": vocab.decode(tokens[i].tolist()),
                    "score": float(scores[i]),
                    "references": [r.decode("utf-8") for r in np.atleast_1d(references[i]) if r],
                    "scene": scenes[i].decode("utf-8"),
                }
            )
            if limit and len(results) >= limit:
                return results
    return results
