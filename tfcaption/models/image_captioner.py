"""`ImageCaptioner`: the captioning task (a backbone and a preprocessor) with `from_preset`, `generate`, `fit`."""

import os
import sys

import keras
import numpy as np
import tensorflow as tf

from tfcaption.data.pipeline import decoder_inputs
from tfcaption.models.captioner_backbone import CaptionerBackbone
from tfcaption.models.captioner_preprocessor import CaptionerPreprocessor
from tfcaption.models.config import CaptionerConfig
from tfcaption.models.presets import PRESETS, get_preset


def preset_table():
    """Preset name -> metadata: the presets table's record (`tfcaption.models.presets.PRESETS`: `description`,
    `paper`, `input`, `params` at `params_vocab_size` tokens, the model's `config` fields) and the parts it builds
    (`image_encoder`, `decoder` types, `hidden_dim`, `pretrained_weights`)."""
    table = {}
    for name, preset in PRESETS.items():
        config = CaptionerConfig.from_preset(name)
        table[name] = {
            "description": preset.description,
            "paper": preset.paper,
            "input": preset.input_kind,
            "params": preset.params,
            "params_vocab_size": preset.params_vocab_size,
            "image_encoder": config.image_encoder.type,
            "decoder": config.decoder.type,
            "hidden_dim": config.hidden_dim,
            "pretrained_weights": getattr(config.image_encoder, "weights", "") or None,
            "config": preset.model_fields(),
        }
    return table


class _ClassProperty:
    def __init__(self, getter):
        self.getter = getter

    def __get__(self, instance, owner):
        return self.getter(owner)


@keras.saving.register_keras_serializable(package="tfcaption")
class ImageCaptioner(keras.Model):
    """An image captioner: a `CaptionerBackbone` (the network) and a `CaptionerPreprocessor` (images and
    tokens), with keras-hub's task methods.

    - `ImageCaptioner.from_preset(name_or_path, vocabulary=None)`: a preset name (untrained, the preset's
      sizes; `ImageCaptioner.presets` lists them), a training run directory (`tfcaption-train` output or a
      converted M2 checkpoint; `weights="best" | "latest" | a weights file`) or a `.keras` file. Every run
      loader (`tfcaption.load`, `tfcaption-evaluate`, `tfcaption-export`, `load_run`) goes through it.
    - `ImageCaptioner.from_backbone(backbone, vocabulary, run_config=None)`: the task around a network already
      built (the trainer's), as evaluation and export take it.
    - `generate(images, sampler=None, max_length=None, return_details=False, prompt=None)`: captions (a string
      for one image, a list for a list or a batch), decoded by any `tfcaption.samplers` sampler, XLA-compiled
      once per (sampler config, input shape), optionally continuing a text prompt.
    - `compile(optimizer=..., sampler=...)` then Keras's own `fit(dataset, validation_data=...)`:
      teacher-forced cross-entropy over non-padding tokens on one host, from `tfcaption.data.train_dataset`
      batches (`{"images" | "features", "tokens"}`) or any `tf.data` of `(images, captions)` (encoded
      bytes or pixels, and caption strings; tokenized by the preprocessor inside tf.data).
    - `save("x.keras")` / `keras.models.load_model` round trip exactly (weights, vocabulary, settings).

    Which sampler decodes: one given to `generate` wins over `compile(sampler=...)`'s, which wins over the
    model's own settings (`beam_size`: a run's or preset's `decode.beam_size`; 1 is `GreedySampler`, k > 1
    `BeamSampler(num_beams=k)`, or `GenerateBeamSampler(num_beams=k)` where `beam_search` is "generate", as an
    imported BLIP run's `RunConfig.beam_search`); see `resolve_sampler`. `max_length` counts the tokens
    generated, <eos> included (transformers' `max_new_tokens`; `tfcaption-caption --max-steps`, the export's
    `max_steps`; a caption without <eos> by then is cut after that many words); default: a run's or preset's
    `data.max_caption_words + 1`, capped by the model's capacity (`backbone.config.max_length - 1`).

    Args:
        backbone: a `CaptionerBackbone`, or None until a vocabulary exists (see `adapt`).
        preprocessor: a `CaptionerPreprocessor`.
        beam_size: the model's default search: 1 `GreedySampler`, k > 1 a beam search of k beams.
        beam_search: which beam search k > 1 runs: "m2" (`BeamSampler`) or "generate" (`GenerateBeamSampler`,
            transformers' `generate()`; a run's `RunConfig.beam_search`).
        max_length: the default tokens generated per caption, <eos> included (None: the model's capacity).
        preset: the preset a backbone is built from when `adapt` sets the vocabulary (no backbone yet).
        sampler: `generate`'s default sampler, as `compile(sampler=...)` sets it (saved with the model).
        **kwargs: `keras.Model` arguments.

    Example:
    >>> captioner = ImageCaptioner.from_preset("small", vocabulary=["<unk>", "<pad>", "<bos>", "<eos>", "a"])
    >>> caption = captioner.generate(np.zeros((96, 96, 3), np.uint8), sampler="greedy", max_length=3)
    >>> isinstance(caption, str), len(caption.split()) <= 3
    (True, True)
    """

    def __init__(self, backbone=None, preprocessor=None, beam_size=1, max_length=None, preset=None, sampler=None,
                 beam_search="m2", **kwargs):
        super().__init__(**kwargs)
        if preprocessor is None:
            raise ValueError("ImageCaptioner needs a preprocessor (CaptionerPreprocessor).")
        self.preprocessor = preprocessor
        self.backbone = backbone
        self.beam_size = int(beam_size)
        if beam_search not in ("m2", "generate"):
            raise ValueError(f"beam_search must be 'm2' or 'generate', got {beam_search!r}.")
        self.beam_search = beam_search
        self.max_length = max_length
        self.preset = preset
        self.sampler = sampler
        if backbone is not None:
            self._check_parts()
            self.built = True

    def _check_parts(self):
        vocab = self.preprocessor.vocabulary
        if vocab is not None and vocab.size != self.backbone.config.vocab_size:
            raise ValueError(f"the vocabulary has {vocab.size} tokens but the backbone predicts "
                             f"{self.backbone.config.vocab_size}.")
        if self.preprocessor.input_key != self.backbone.input_key:
            raise ValueError(f"the preprocessor prepares {self.preprocessor.input_key} but the backbone reads "
                             f"{self.backbone.input_key}.")

    # ---- building -------------------------------------------------------------------------------

    presets = _ClassProperty(lambda cls: preset_table())

    @classmethod
    def from_preset(cls, name_or_path, vocabulary=None, load_weights=True, weights="best", **overrides):
        """A captioner from a preset name, a training run directory or a `.keras` file.

        Args:
            name_or_path: a name in `ImageCaptioner.presets` (untrained: random weights, but the image
                encoder's pretrained checkpoint where the preset names one), a run directory (its best
                weights, vocabulary and decode settings), a `.keras` file saved by `ImageCaptioner.save`, or a
                BLIP captioning checkpoint: `hf://OWNER/NAME[@REVISION]` or a directory in the Hub's layout
                (imported in memory, `tfcaption.interop.hf.import_blip.blip_captioner`; `tfcaption-import`
                writes it as a run directory).
            vocabulary: for a preset: a `Vocabulary`, its tokens or a vocab.txt path; None builds it later
                (`adapt(captions)`, or `fit` on an `(images, captions)` dataset).
            load_weights: for a preset: load the image encoder's pretrained checkpoint (`image_encoder.weights`:
                Google's ViT `.npz`, keras.applications' ImageNet weights; downloaded once, or a local file)
                as `tfcaption-train` does; False leaves it random.
            weights: for a run directory: "best" (best.weights.h5, else the latest checkpoint), "latest" (the
                latest training checkpoint), or the path of a `.weights.h5` file or checkpoint of that run's model.
            **overrides: for a preset: `CaptionerConfig` fields (e.g. `hidden_dim=64`, `decoder={"num_layers": 1}`).
        """
        path = os.fspath(name_or_path)
        if path.endswith(".weights.h5") or os.path.basename(os.path.normpath(path)) == "checkpoints":
            path = os.path.dirname(os.path.normpath(path))  # a run's weights: the run (as tfcaption.load reads it)
        if path in PRESETS:
            if weights != "best":
                raise ValueError("weights applies to run directories; a preset's weights are random or its "
                                 "image encoder's checkpoint (load_weights).")
            return cls._from_preset_name(path, vocabulary, load_weights, overrides)
        if overrides or vocabulary is not None:
            raise ValueError("vocabulary and overrides apply to preset names only, not to saved models.")
        from tfcaption.interop.hf.import_blip import blip_captioner, is_hub_source

        if is_hub_source(path):
            if weights != "best":
                raise ValueError("weights applies to run directories: a Hub checkpoint holds its own weights.")
            return blip_captioner(path)
        if path.endswith(".keras"):
            if weights != "best":
                raise ValueError("weights applies to run directories: a .keras file holds its own weights.")
            model = keras.saving.load_model(path)
            if not isinstance(model, cls):
                raise ValueError(f"{path} holds a {type(model).__name__}, not an {cls.__name__}.")
            return model
        if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
            raise ValueError(f"{path} is a SavedModel export (TensorFlow only): caption with "
                             "tfcaption.load(path), or pass the training run directory.")
        from tfcaption.training.run_directory import RunDirectory

        if tf.io.gfile.isdir(path):
            if not RunDirectory(path).exists():
                raise FileNotFoundError(f"{path} is not a tfcaption run or checkpoint directory (it has no "
                                        "config.json and vocab.txt).")
            return cls._from_run(path, weights)
        raise ValueError(f"{path!r} is not a preset ({', '.join(sorted(PRESETS))}), a run directory or a "
                         ".keras file.")

    @classmethod
    def _from_preset_name(cls, name, vocabulary, load_weights, overrides):
        from tfcaption.config import RunConfig

        config = CaptionerConfig.from_preset(name, **overrides)
        run = RunConfig.from_preset(get_preset(name).name)  # the caption length and search the preset's runs use
        words = min(run.data.max_caption_words, config.max_length - 2)
        part = config.image_encoder
        preprocessor = CaptionerPreprocessor(
            None, input_key="features" if part.type == "regions" else "images",
            image_size=getattr(part, "image_size", None), feature_dim=getattr(part, "feature_dim", None),
            max_caption_words=words)
        captioner = cls(None, preprocessor, beam_size=run.decode.beam_size, beam_search=run.beam_search,
                        max_length=words + 1,
                        preset={"name": name, "overrides": overrides, "load_weights": load_weights})
        if vocabulary is not None:
            captioner.set_vocabulary(vocabulary)
        return captioner

    @classmethod
    def _from_run(cls, path, weights="best", run_config=None):
        """A run directory's captioner: its model config, vocabulary, decode settings and `weights` (see
        `from_preset`); `run_config` if already read from that run's config.json."""
        from tfcaption.config import RunConfig
        from tfcaption.data.vocabulary import load_vocabulary
        from tfcaption.training.run_directory import RunDirectory, load_run_weights

        run = RunDirectory(path)
        run_config = run_config or RunConfig.load(run.config)
        backbone = CaptionerBackbone.from_model_config(run_config.model)
        load_run_weights(backbone, path, weights)
        return cls.from_backbone(backbone, load_vocabulary(run.vocab, run_config.data.tokenizer), run_config)

    @classmethod
    def from_backbone(cls, backbone, vocabulary, run_config=None):
        """The task around a built (or trained) `backbone` and its `vocabulary` (a `Vocabulary` or its tokens).

        With a `tfcaption.config.RunConfig`, its tokenizer, caption length and decode settings (what a run
        directory loads as, and what the trainer evaluates and exports); without one, greedy search up to
        the backbone's capacity and the vocabulary's own tokenizer.
        """
        part = backbone.config.image_encoder
        if run_config is not None:
            tokenizer, words = run_config.data.tokenizer, run_config.data.max_caption_words
            settings = {"beam_size": run_config.decode.beam_size, "beam_search": run_config.beam_search,
                        "max_length": run_config.data.max_decode_steps}
        else:
            # A WordPieceVocabulary exists only once its module is imported (which needs tensorflow-text).
            wordpiece = sys.modules.get("tfcaption.data.wordpiece")
            bert = sys.modules.get("tfcaption.data.bert_tokenizer")
            tokenizer = ("wordpiece" if wordpiece and isinstance(vocabulary, wordpiece.WordPieceVocabulary) else
                         "bert" if bert and isinstance(vocabulary, bert.BertTokenizer) else "word")
            words, settings = backbone.config.max_length - 2, {}
        preprocessor = CaptionerPreprocessor(
            vocabulary, tokenizer=tokenizer, input_key=backbone.input_key,
            image_size=getattr(part, "image_size", None), feature_dim=getattr(part, "feature_dim", None),
            max_caption_words=words, resample=getattr(part, "resample", "bilinear"))
        return cls(backbone, preprocessor, **settings)

    def set_vocabulary(self, vocabulary):
        """Sets the vocabulary of a captioner built from a preset name, and builds its backbone to match."""
        if self.backbone is not None:
            raise ValueError("this captioner's backbone is built: its vocabulary is fixed.")
        vocab = self.preprocessor.set_vocabulary(vocabulary)
        preset = self.preset or {}
        if not preset.get("name"):
            raise ValueError("no preset to build the backbone from: pass backbone=... instead.")
        from tfcaption.models.pretrained import load_pretrained, with_checkpoint_sizes

        overrides = {**preset.get("overrides", {}), "vocab_size": vocab.size}
        config = CaptionerConfig.from_preset(preset["name"], **overrides)
        load_weights = preset.get("load_weights", True)
        self.backbone = CaptionerBackbone.from_model_config(with_checkpoint_sizes(config) if load_weights else config)
        if load_weights:
            load_pretrained(self.backbone)
        self._check_parts()
        self.built = True
        return vocab

    def adapt(self, captions, min_count=1, max_size=None):
        """Builds the vocabulary from training captions (strings, or a tf.data of strings or of
        `(images, captions)`), then the backbone at the preset's sizes. Returns the vocabulary."""
        scratch = CaptionerPreprocessor(**{**self.preprocessor.get_config(), "vocabulary": None})
        return self.set_vocabulary(scratch.adapt(captions, min_count=min_count, max_size=max_size))

    def _require_backbone(self):
        if self.backbone is None:
            raise ValueError("this captioner has no vocabulary yet: from_preset(name, vocabulary=...), "
                             "adapt(captions), or fit on an (images, captions) dataset.")
        return self.backbone

    # ---- captioning -----------------------------------------------------------------------------

    def default_sampler(self, beam_size=None):
        """The model's own search with `beam_size` beams (None: its `beam_size`): 1 `GreedySampler`, k > 1
        `BeamSampler(num_beams=k)`, or `GenerateBeamSampler(num_beams=k)` where `beam_search` is "generate"."""
        from tfcaption.decoding.captioning import as_sampler

        search = "generate" if self.beam_search == "generate" else None
        return as_sampler(None, beam_size or self.beam_size, search=search)

    def resolve_sampler(self, sampler=None):
        """The `tfcaption.samplers.Sampler` that decodes: `sampler` if given, else `compile(sampler=...)`'s, else
        the model's own settings (`default_sampler`: `beam_size` beams of its `beam_search`).

        `sampler` is a `Sampler`, a name ("greedy", "beam", "random", "top_k", "top_p") or a config dict. The
        bare name "beam" searches with the model's `beam_size` beams where that is above 1 (a run's
        `decode.beam_size`), else `BeamSampler`'s default; other names take their class's defaults.

        Example:
        >>> captioner = ImageCaptioner(None, CaptionerPreprocessor(None, image_size=32), beam_size=2)
        >>> [type(captioner.resolve_sampler(s)).__name__ for s in (None, "greedy", "top_p")]
        ['BeamSampler', 'GreedySampler', 'TopPSampler']
        >>> captioner.resolve_sampler("beam").num_beams
        2
        """
        from tfcaption import samplers

        sampler = sampler if sampler is not None else self.sampler
        if sampler is None:
            return self.default_sampler()
        if isinstance(sampler, str) and sampler.strip().lower() == "beam" and self.beam_size > 1:
            return samplers.BeamSampler(num_beams=self.beam_size)
        return samplers.get(sampler)

    def generate(self, images, sampler=None, max_length=None, return_details=False, prompt=None):
        """Captions images, or continues a text prompt for each.

        Decoding is XLA-compiled once per (sampler config, caption length, input shape) and reused
        (`tfcaption.decoding.compiled_generator`); strings stay outside the compiled function.

        Args:
            images: a path, encoded bytes or an image array (H, W[, C]); a list of them; or a batch array /
                tensor (B, H, W, 3). Region models: (R, feature_dim) arrays, a list, or (B, R, feature_dim).
            sampler: a `tfcaption.samplers.Sampler` or a name ("greedy", "beam", "random", "top_k", "top_p");
                None: `compile(sampler=...)`'s, else the model's `beam_size` (see `resolve_sampler`).
            max_length: tokens generated per caption at most, <eos> included: a caption that has not ended
                by then is cut after `max_length` words (docs/guides/decoding.md#caption-length); after a
                prompt, the tokens generated after it (transformers' `max_new_tokens`). None: the model's
                default, which a prompt's pieces count towards (as transformers' `max_length`). A ValueError
                above the model's position table (`backbone.config.max_length`), the prompt included.
            return_details: return dicts instead of strings.
            prompt: text every caption starts with (BLIP's conditional captioning: "a picture of"), or one
                per image (each the same number of tokens), tokenized by the preprocessor
                (`CaptionerPreprocessor.prompt_ids`); the captions returned include it, as transformers'
                decode does.

        Returns:
            one caption string per image (a string for a single image); with `return_details`, a dict per
            image: `caption`, `score` (the sampler's score: a beam's search score, else the sum of the
            tokens' log-probabilities), `tokens` (the token row generated, ints), `beams` (every beam, best
            first: `caption`, `score`, `tokens`; one entry for samplers other than the beam searches). With a
            prompt, `tokens` start with its pieces (the start token left out, as without one).
        """
        from tfcaption.decoding.captioning import check_prompt_fits, checked_max_steps, compiled_generator

        backbone = self._require_backbone()
        single, inputs = self.preprocessor.preprocess_images(images)
        prompt_ids = None
        if prompt is not None:  # one row per image, so every call feeds the same rank
            prompt_ids = self.preprocessor.prompt_ids(prompt, len(inputs))
            prompt_ids = np.broadcast_to(prompt_ids, (len(inputs), prompt_ids.shape[-1]))
        steps = checked_max_steps(backbone, max_length or self.max_length)
        if prompt_ids is not None and not max_length:  # the default length counts the prompt's pieces
            steps = max(1, steps - (prompt_ids.shape[-1] - 1))
        check_prompt_fits(backbone, prompt_ids, steps)
        generator = compiled_generator(backbone, self.resolve_sampler(sampler), steps, special_ids=self.preprocessor,
                                       prompt_length=None if prompt_ids is None else prompt_ids.shape[-1])
        feed = {} if prompt_ids is None else {"prompt_ids": tf.constant(prompt_ids)}
        outputs = {name: value.numpy() for name, value in generator(tf.constant(inputs), **feed).items()}
        captions = self.preprocessor.detokenize(outputs["tokens"])
        if not return_details:
            return captions[0] if single else captions
        beam_tokens = outputs.get("beam_tokens", outputs["tokens"][:, None])
        beam_scores = outputs.get("beam_scores", outputs["scores"][:, None])
        results = []
        for i, caption in enumerate(captions):
            beams = [{"caption": text, "score": float(score), "tokens": row.tolist()} for text, score, row in
                     zip(self.preprocessor.detokenize(beam_tokens[i]), beam_scores[i], beam_tokens[i])]
            results.append({"caption": caption, "score": float(outputs["scores"][i]),
                            "tokens": outputs["tokens"][i].tolist(), "beams": beams})
        return results[0] if single else results

    # ---- training -------------------------------------------------------------------------------

    def compile(self, optimizer="auto", sampler=None, **kwargs):
        """`keras.Model.compile` plus the default `sampler` of `generate` (a `tfcaption.samplers.Sampler` or a
        name; checked here).

        `optimizer="auto"`: Adam at 1e-4. The loss is always masked cross-entropy (padding tokens carry
        no loss), as in `tfcaption.training`; `loss=` is not taken.
        """
        from tfcaption import samplers

        if "loss" in kwargs:
            raise ValueError("ImageCaptioner's loss is masked cross-entropy; compile takes no loss.")
        if sampler is not None:
            samplers.get(sampler)  # an unknown name or a wrong argument fails here, not at the first generate
        self.sampler = sampler
        if optimizer == "auto":
            optimizer = keras.optimizers.Adam(learning_rate=1e-4)
        super().compile(optimizer=optimizer, **kwargs)

    def call(self, inputs, training=None):
        """Teacher-forced logits for `{input_key: ..., "tokens": (B, T)}` -> (B, T, vocab); the tokens equal
        to the tokenizer's <pad> are padding unless `inputs` brings its own `"padding_mask"`."""
        backbone = self._require_backbone()
        if "padding_mask" not in inputs:
            inputs = {**inputs, "padding_mask": tf.not_equal(inputs["tokens"], self.preprocessor.pad_id)}
        return backbone(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Cross-entropy averaged over the target tokens that are not <pad> (plus any layer losses)."""
        mask = tf.cast(tf.not_equal(y, self.preprocessor.pad_id), tf.float32)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(y, tf.int32), tf.cast(y_pred, tf.float32))
        loss = tf.math.divide_no_nan(tf.reduce_sum(losses * mask), tf.reduce_sum(mask))
        if self.losses:
            loss = loss + tf.add_n([tf.cast(extra, tf.float32) for extra in self.losses])
        return loss

    def _training_data(self, data):
        """`(x, y)` elements for Keras from a tfcaption batch dataset or an `(images, captions)` dataset."""
        if not isinstance(data, tf.data.Dataset):
            return data
        spec = data.element_spec
        if isinstance(spec, dict) and "tokens" in spec:
            key = self.preprocessor.input_key

            def split(batch):
                tokens = batch["tokens"]
                return {key: batch[key], **decoder_inputs(tokens, self.preprocessor.pad_id)}, tokens[..., 1:]

            return data.map(split, num_parallel_calls=tf.data.AUTOTUNE)
        if isinstance(spec, tuple) and len(spec) == 2 and getattr(spec[1], "dtype", None) == tf.string:
            return data.map(self.preprocessor.preprocess_samples, num_parallel_calls=tf.data.AUTOTUNE)
        return data

    def fit(self, x=None, y=None, validation_data=None, **kwargs):
        """`keras.Model.fit` over a tfcaption batch dataset or an `(images, captions)` tf.data (see the class
        docstring); a captioner without a vocabulary first builds it from `x`'s captions."""
        if self.backbone is None and isinstance(x, tf.data.Dataset):
            self.adapt(x)
        return super().fit(self._training_data(x), y, validation_data=self._training_data(validation_data),
                           **kwargs)

    def evaluate(self, x=None, y=None, **kwargs):
        """`keras.Model.evaluate` (the masked cross-entropy) over the datasets `fit` takes."""
        return super().evaluate(self._training_data(x), y, **kwargs)

    # ---- saving ---------------------------------------------------------------------------------

    def get_config(self):
        from tfcaption import samplers

        return {
            "backbone": None if self.backbone is None else keras.saving.serialize_keras_object(self.backbone),
            "preprocessor": keras.saving.serialize_keras_object(self.preprocessor),
            "beam_size": self.beam_size, "beam_search": self.beam_search, "max_length": self.max_length,
            "preset": self.preset, "name": self.name,
            # compile's sampler: a name as given (a bare "beam" follows beam_size), an object as its config
            "sampler": (self.sampler if self.sampler is None or isinstance(self.sampler, (str, dict))
                        else samplers.serialize(samplers.get(self.sampler))),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for part in ("backbone", "preprocessor"):
            if config.get(part) is not None:
                config[part] = keras.saving.deserialize_keras_object(config[part])
        return cls(**config)
