"""A BLIP captioning checkpoint (`BlipForConditionalGeneration`) as a tfcaption `ImageCaptioner` or run directory.

```
HubCheckpoint(source)   config.json, tensors, tokenizer files, image processor settings
  -> blip_model_config  CaptionerConfig: image encoder "blip_vit" (vision_config + the processor's rescale and
                        normalisation), no visual encoder (0 layers), decoder "bert" (text_config's sizes)
  -> blip_captioner     ImageCaptioner: CaptionerBackbone with the checkpoint's weights, CaptionerPreprocessor
                        with its BertTokenizer and BLIP's bicubic resize
  -> import_blip        a run directory: config.json (RunConfig), vocab.txt + tokenizer_config.json,
                        best.weights.h5, import.json (where it came from)
```

`ImageCaptioner.from_preset("hf://OWNER/NAME")` (or a Hub directory) is `blip_captioner` (nothing written);
`tfcaption-import SOURCE OUT_DIR` is `import_blip`, whose run directory every run loader reads
(`ImageCaptioner.from_preset(OUT_DIR)`, `tfcaption.load`, `tfcaption-caption --model OUT_DIR`).
"""

import json
import os

from tfcaption.interop.hf.errors import HubCheckpointError
from tfcaption.interop.hf.hub_checkpoint import HubCheckpoint
from tfcaption.interop.hf.json_files import read_json_object
from tfcaption.interop.hf.sources import CONFIG_FILE, is_hub_uri

BLIP_ARCHITECTURE = "BlipForConditionalGeneration"
# transformers' generate() defaults: max_length counts every token of the row, [DEC] included
GENERATE_DEFAULTS = {"max_length": 20, "num_beams": 1}
GENERATION_FILE = "generation_config.json"
IMPORT_RECORD = "import.json"


def is_hub_source(path):
    """Whether `path` is an `hf://` source or a checkpoint directory in the Hub's layout (its config.json is a
    transformers config, not a tfcaption run's)."""
    path = os.fspath(path)
    if is_hub_uri(path):
        return True
    config = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(config):
        return False
    try:
        with open(config, encoding="utf-8") as f:
            values = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(values, dict) and "model" not in values and ("model_type" in values or
                                                                    "architectures" in values)


def _checkpoint(source):
    checkpoint = source if isinstance(source, HubCheckpoint) else HubCheckpoint(source)
    if checkpoint.architecture != BLIP_ARCHITECTURE:
        raise HubCheckpointError(f"{checkpoint.source}: a {checkpoint.architecture} checkpoint; tfcaption imports "
                                 f"{BLIP_ARCHITECTURE} (BLIP captioning) checkpoints as captioners.")
    return checkpoint


def blip_model_config(checkpoint):
    """The `CaptionerConfig` of a BLIP checkpoint (a `HubCheckpoint`): every size from its config.json, the
    normalisation from its image processor settings."""
    from tfcaption.interop.hf.blip_weights import bert_text_decoder_arguments, blip_vision_arguments
    from tfcaption.models.config import CaptionerConfig

    vision, text = blip_vision_arguments(checkpoint.config), bert_text_decoder_arguments(checkpoint.config)
    processor = checkpoint.image_processor
    size = processor.output_size
    if size is not None and size != (vision["image_size"],) * 2:
        raise HubCheckpointError(f"{checkpoint.source}: the image processor resizes to {size[0]}x{size[1]} but "
                                 f"vision_config.image_size is {vision['image_size']}; tfcaption imports BLIP at "
                                 "its vision tower's size.")
    if processor.resample_name not in ("bicubic", "bilinear"):
        raise HubCheckpointError(f"{checkpoint.source}: image processor resample {processor.resample_name!r}; "
                                 "tfcaption resizes with 'bicubic' or 'bilinear'.")
    image_encoder = {
        "type": "blip_vit", "image_size": vision["image_size"], "patch_size": vision["patch_size"],
        "width": vision["hidden_dim"], "num_layers": vision["num_layers"], "num_heads": vision["num_heads"],
        "mlp_dim": vision["intermediate_dim"], "layer_norm_epsilon": vision["layer_norm_epsilon"],
        "hidden_act": vision["hidden_act"],
        "rescale_factor": processor.rescale_factor if processor.do_rescale else 1.0,
        "image_mean": list(processor.image_mean) if processor.do_normalize else [0.0, 0.0, 0.0],
        "image_std": list(processor.image_std) if processor.do_normalize else [1.0, 1.0, 1.0],
        "resample": processor.resample_name,
    }
    return CaptionerConfig.from_dict({
        "vocab_size": text["vocab_size"], "image_encoder": image_encoder, "encoder": {"num_layers": 0},
        "decoder": {"type": "bert", "num_layers": text["num_layers"], "hidden_act": text["hidden_act"]},
        "hidden_dim": text["hidden_dim"], "num_heads": text["num_heads"],
        "key_dim": text["hidden_dim"] // text["num_heads"], "intermediate_dim": text["intermediate_dim"],
        "dropout": 0.0, "max_length": text["max_length"], "layer_norm_epsilon": text["layer_norm_epsilon"],
    })


def _copy_weights(source, target):
    """Every weight of `source` into `target`, two layers built alike (the same weights in the same order)."""
    pairs = list(zip(source.weights, target.weights))
    if len(source.weights) != len(target.weights) or any(a.shape != b.shape for a, b in pairs):
        raise ValueError(f"{source.name} and {target.name} differ in their weights.")
    for value, variable in pairs:
        variable.assign(value)


def blip_backbone(checkpoint, config=None):
    """A `CaptionerBackbone` with a BLIP checkpoint's weights (`config`: its `blip_model_config`)."""
    from tfcaption.interop.hf.blip_weights import bert_text_decoder_from_hf, blip_vision_tower_from_hf
    from tfcaption.models.captioner_backbone import CaptionerBackbone

    checkpoint = _checkpoint(checkpoint)
    backbone = CaptionerBackbone.from_model_config(config or blip_model_config(checkpoint))
    tensors = checkpoint.tensors()
    _copy_weights(blip_vision_tower_from_hf(checkpoint.config, tensors), backbone.image_encoder.tower)
    _copy_weights(bert_text_decoder_from_hf(checkpoint.config, tensors), backbone.decoder)
    return backbone


def blip_tokenizer(checkpoint):
    """The checkpoint's `BertTokenizer` (vocabulary with the added [DEC] and [ENC], its settings)."""
    from tfcaption.data.bert_tokenizer import BertTokenizer

    return BertTokenizer.from_directory(checkpoint.directory)


def blip_generation_defaults(checkpoint):
    """generate()'s defaults this checkpoint was published with: `max_length` (every token of the row, [DEC]
    included) and `num_beams`, from its generation_config.json, else its text_config, else transformers'
    (20 and 1). The logit controls (min_length, repetition_penalty, ...) are the sampler's, given per call."""
    path = os.path.join(checkpoint.directory, GENERATION_FILE)
    generation = read_json_object(path) if os.path.isfile(path) else {}
    text = checkpoint.config.get("text_config") or {}
    defaults = {}
    for name, default in GENERATE_DEFAULTS.items():
        value = generation.get(name, text.get(name, default))
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise HubCheckpointError(f"{checkpoint.source}: generation {name} must be an integer >= 1, got {value!r}.")
        defaults[name] = value
    return defaults


def blip_run_config(model_config, out_dir="", generation=None):
    """The `RunConfig` of an imported BLIP model: the `bert` tokenizer, transformers' beam search
    (`decode.beam_search: generate`), and the checkpoint's generate() defaults (`blip_generation_defaults`:
    `num_beams` as the beam size, `max_length` as the caption length, capped by the position table)."""
    from tfcaption.config import DataConfig, DecodeConfig, ExportConfig, RunConfig, TrainConfig

    generation = {**GENERATE_DEFAULTS, **(generation or {})}
    words = max(1, min(generation["max_length"], model_config.max_length) - 2)
    beams = generation["num_beams"]
    return RunConfig(
        model=model_config,
        data=DataConfig(spec="", tokenizer="bert", max_caption_words=words, augment_flip=False),
        train=TrainConfig(output_dir=os.fspath(out_dir)),
        decode=DecodeConfig(beam_size=beams, beam_search="generate"),
        export=ExportConfig(beam_size=beams),
    )


def blip_captioner(source):
    """An `ImageCaptioner` of a BLIP checkpoint (a directory in the Hub's layout, `hf://OWNER/NAME[@REV]` or a
    `HubCheckpoint`), built in memory, with the decode settings `blip_run_config` gives an imported run."""
    from tfcaption.models.image_captioner import ImageCaptioner

    checkpoint = _checkpoint(source)
    config = blip_model_config(checkpoint)
    return ImageCaptioner.from_backbone(blip_backbone(checkpoint, config), blip_tokenizer(checkpoint),
                                        blip_run_config(config, generation=blip_generation_defaults(checkpoint)))


def check_out_dir(out_dir, overwrite):
    """OUT_DIR as a path, refusing to replace a run (or anything) there unless `overwrite`."""
    path = os.fspath(out_dir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"{path} exists and is not a directory")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise FileExistsError(f"{path} already exists and is not empty; pass --overwrite to replace it")
    return path


def import_blip(source, out_dir, overwrite=False):
    """Writes a BLIP checkpoint as a tfcaption run directory; returns `(captioner, RunDirectory)`.

    Raises (one line each): FileExistsError for a non-empty OUT_DIR without `overwrite`,
    HubFilesNotFoundError for missing files (or an offline `hf://` miss), HubCheckpointError for another
    architecture, MissingTensorError for a tensor the config needs.
    """
    import shutil

    from tfcaption.data.vocabulary import save_vocabulary
    from tfcaption.training.run_directory import RunDirectory

    path = check_out_dir(out_dir, overwrite)
    checkpoint = _checkpoint(source)
    config = blip_model_config(checkpoint)
    backbone, tokenizer = blip_backbone(checkpoint, config), blip_tokenizer(checkpoint)
    generation = blip_generation_defaults(checkpoint)
    if os.path.isdir(path) and overwrite:
        shutil.rmtree(path)  # --overwrite replaces the directory, so no stale checkpoint outlives it
    run = RunDirectory(path)
    os.makedirs(run.path, exist_ok=True)
    run_config = blip_run_config(config, run.path, generation)
    run_config.save(run.config)
    save_vocabulary(tokenizer, run.vocab)
    backbone.save_weights(run.best_weights)
    record = {"source": checkpoint.source, "directory": str(checkpoint.directory),
              "architecture": checkpoint.architecture, "vocab_size": tokenizer.size,
              "parameters": int(backbone.count_params()), "generation": generation}
    with open(run.join(IMPORT_RECORD), "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
    from tfcaption.models.image_captioner import ImageCaptioner

    return ImageCaptioner.from_backbone(backbone, tokenizer, run_config), run
