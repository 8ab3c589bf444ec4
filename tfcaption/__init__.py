"""tfcaption: Meshed-Memory Transformer image captioning for Keras 3 / TensorFlow."""

__version__ = "0.1.0"

__all__ = ["ImageCaptioner", "load", "samplers", "train"]


def __getattr__(name):
    # Imported on first use: `import tfcaption` stays light (no TensorFlow) for the console scripts' parsers.
    if name == "ImageCaptioner":
        from tfcaption.models.image_captioner import ImageCaptioner

        return ImageCaptioner
    if name == "samplers":
        import importlib

        return importlib.import_module("tfcaption.samplers")
    raise AttributeError(f"module 'tfcaption' has no attribute {name!r}")


def load(path, beam_size=None, sampler=None, max_length=None, prompt=None):
    """Loads a SavedModel export or a run directory; returns an object with `caption(images)`.

    For a run directory, `sampler` (a `tfcaption.samplers.Sampler` or a name such as "beam", "top_p")
    or `beam_size` chooses the decoding; `caption_with_attention` decodes with the same one. `max_length`:
    tokens generated per caption at most, <eos> included (after a prompt, the tokens after it); None: the run's
    or export's. `prompt`: for a run directory, text every caption continues (`CaptionPredictor`'s)."""
    from tfcaption.inference import load as _load

    return _load(path, beam_size, sampler, max_length, prompt)


def train(run_config, log=print):
    """Does what `tfcaption-train` does (dataset, vocabulary, training, evaluation, export) and returns a
    `TrainResult`; see `tfcaption.training.recipe.train`."""
    from tfcaption.training.recipe import train as _train

    return _train(run_config, log)
