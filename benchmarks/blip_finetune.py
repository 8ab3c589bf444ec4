"""Fine-tuning an imported BLIP-layout model on shapes with XE then SCST: validation CIDEr-D before, after XE and
after SCST, on this machine's CPU.

1. Writes a BLIP captioning checkpoint in the Hugging Face Hub's layout (config.json, model.safetensors,
   vocab.txt, tokenizer and image-processor settings), small enough for the CPU, with random weights
   (transformers' initialisation: normal(0, 0.02), zero biases, unit LayerNorm gains) and a BERT vocabulary
   that spells every word of the shapes training captions;
2. imports it (`tfcaption-import`);
3. fine-tunes it with `tfcaption-train --init-from` on the built-in shapes dataset: the imported run's default
   phases, XE then SCST (each phase's epochs and steps from the flags here);
4. prints a table and writes JSON (default benchmarks/results/blip_finetune.json): the validation CIDEr-D of
   greedy captions (the trainer's own per-epoch measure, on the same `--val-images` images) of the imported
   model, at the end of XE (the best XE epoch, which SCST starts from) and at the end of SCST (the best
   SCST epoch, the run's best weights), and the run's test-split report.

    python benchmarks/blip_finetune.py --xe-epochs 2 --xe-steps 150 --scst-epochs 1 --scst-steps 40  # the defaults
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # BERT's first ids; BLIP adds [DEC] and [ENC]
ADDED_TOKENS = ["[DEC]", "[ENC]"]


def caption_words(data_dir):
    """Every word and punctuation mark of the training captions, as BERT's pre-tokenizer splits them."""
    from tfcaption.evaluation import training_captions

    words = set()
    for caption in training_captions(data_dir):
        words.update(re.findall(r"\w+|[^\w\s]", caption.lower()))
    return sorted(words)


def blip_config(vocab_size, args):
    """A `BlipForConditionalGeneration` config.json at the sizes of `args`."""
    vision = {"model_type": "blip_vision_model", "hidden_size": args.width, "intermediate_size": 4 * args.width,
              "num_hidden_layers": args.vision_layers, "num_attention_heads": args.heads,
              "image_size": args.image_size, "patch_size": args.patch_size, "hidden_act": "gelu",
              "layer_norm_eps": 1e-5}
    text = {"model_type": "blip_text_model", "vocab_size": vocab_size, "hidden_size": args.width,
            "encoder_hidden_size": args.width, "intermediate_size": 4 * args.width,
            "num_hidden_layers": args.text_layers, "num_attention_heads": args.heads, "max_position_embeddings": 40,
            "hidden_act": "gelu", "layer_norm_eps": 1e-12, "pad_token_id": 0, "bos_token_id": vocab_size - 2,
            "sep_token_id": 3, "eos_token_id": 3, "is_decoder": True, "tie_word_embeddings": True}
    return {"architectures": ["BlipForConditionalGeneration"], "model_type": "blip", "vision_config": vision,
            "text_config": text, "tie_word_embeddings": True}


def blip_tensors(config, seed):
    """Random weights under the names and torch shapes of a BLIP captioning checkpoint (Linear: (out, in))."""
    rng = np.random.default_rng(seed)
    tensors = {}

    def normal(name, *shape):
        tensors[name] = rng.normal(0.0, 0.02, shape).astype(np.float32)

    def linear(name, out_dim, in_dim):
        normal(name + ".weight", out_dim, in_dim)
        tensors[name + ".bias"] = np.zeros(out_dim, np.float32)

    def norm(name, dim):
        tensors[name + ".weight"], tensors[name + ".bias"] = np.ones(dim, np.float32), np.zeros(dim, np.float32)

    v, t = config["vision_config"], config["text_config"]
    d, mlp, patch = v["hidden_size"], v["intermediate_size"], v["patch_size"]
    grid = (v["image_size"] // patch) ** 2
    normal("vision_model.embeddings.class_embedding", 1, 1, d)
    normal("vision_model.embeddings.position_embedding", 1, 1 + grid, d)
    linear("vision_model.embeddings.patch_embedding", d, 3 * patch * patch)
    tensors["vision_model.embeddings.patch_embedding.weight"] = (
        tensors["vision_model.embeddings.patch_embedding.weight"].reshape(d, 3, patch, patch))
    for i in range(v["num_hidden_layers"]):
        name = f"vision_model.encoder.layers.{i}."
        norm(name + "layer_norm1", d)
        linear(name + "self_attn.qkv", 3 * d, d)
        linear(name + "self_attn.projection", d, d)
        norm(name + "layer_norm2", d)
        linear(name + "mlp.fc1", mlp, d)
        linear(name + "mlp.fc2", d, mlp)
    norm("vision_model.post_layernorm", d)

    h, inner, vocab = t["hidden_size"], t["intermediate_size"], t["vocab_size"]
    prefix = "text_decoder.bert."
    normal(prefix + "embeddings.word_embeddings.weight", vocab, h)
    normal(prefix + "embeddings.position_embeddings.weight", t["max_position_embeddings"], h)
    norm(prefix + "embeddings.LayerNorm", h)
    for i in range(t["num_hidden_layers"]):
        name = f"{prefix}encoder.layer.{i}."
        for attention, source in (("attention", h), ("crossattention", t["encoder_hidden_size"])):
            linear(f"{name}{attention}.self.query", h, h)
            linear(f"{name}{attention}.self.key", h, source)
            linear(f"{name}{attention}.self.value", h, source)
            linear(f"{name}{attention}.output.dense", h, h)
            norm(f"{name}{attention}.output.LayerNorm", h)
        linear(name + "intermediate.dense", inner, h)
        linear(name + "output.dense", h, inner)
        norm(name + "output.LayerNorm", h)
    linear("text_decoder.cls.predictions.transform.dense", h, h)
    norm("text_decoder.cls.predictions.transform.LayerNorm", h)
    tensors["text_decoder.cls.predictions.bias"] = np.zeros(vocab, np.float32)
    return tensors  # the LM head's decoder is tied to the word embedding: left out, as transformers saves it


def write_checkpoint(directory, words, args):
    """A BLIP checkpoint directory in the Hub's layout; returns its config.json dict."""
    from safetensors.numpy import save_file

    os.makedirs(directory, exist_ok=True)
    tokens = SPECIAL_TOKENS + words
    config = blip_config(len(tokens) + len(ADDED_TOKENS), args)
    files = {
        "config.json": config,
        "tokenizer_config.json": {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "bos_token": "[DEC]",
                                  "extra_special_tokens": ["[ENC]"], "pad_token": "[PAD]", "unk_token": "[UNK]",
                                  "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"},
        "preprocessor_config.json": {"image_processor_type": "BlipImageProcessor", "do_resize": True,
                                     "size": {"height": args.image_size, "width": args.image_size}, "resample": 3,
                                     "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                                     "image_mean": [0.48145466, 0.4578275, 0.40821073],
                                     "image_std": [0.26862954, 0.26130258, 0.27577711]},
    }
    for name, values in files.items():
        with open(os.path.join(directory, name), "w") as f:
            json.dump(values, f, indent=2)
    with open(os.path.join(directory, "vocab.txt"), "w") as f:
        f.write("".join(token + "\n" for token in tokens))
    save_file(blip_tensors(config, args.seed), os.path.join(directory, "model.safetensors"))
    return config


def run(args_list, log_path):
    """A tfcaption command in a child process (its output to `log_path`); returns its wall seconds."""
    env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.perf_counter()
    with open(log_path, "w") as log:
        done = subprocess.run([sys.executable, "-m", *args_list], stdout=log, stderr=subprocess.STDOUT, env=env,
                              cwd=REPO)
    if done.returncode:
        sys.exit(f"{' '.join(args_list[:1])} failed (exit {done.returncode}); see {log_path}")
    return time.perf_counter() - started


def val_cider_of(run_dir, data_dir, val_images):
    """The trainer's validation CIDEr-D (greedy, the first `val_images` val images) of a run directory's model."""
    import tfcaption
    from tfcaption.config import RunConfig
    from tfcaption.training.validation import validation_cider

    captioner = tfcaption.ImageCaptioner.from_preset(run_dir)
    config = RunConfig.load(os.path.join(run_dir, "config.json"))
    model = captioner.backbone
    cider, _ = validation_cider(model, captioner.preprocessor.vocabulary, data_dir, config.data, config.decode,
                                model.image_encoder.image_size, val_images=val_images,
                                resample=model.image_encoder.resample)
    return cider


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", help="where the checkpoint and the runs go (default: a temporary directory)")
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "blip_finetune.json"))
    parser.add_argument("--image-size", type=int, default=96, help="the shapes dataset's own size: no resize")
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--width", type=int, default=128, help="vision and text width (MLPs 4x)")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vision-layers", type=int, default=2)
    parser.add_argument("--text-layers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=50, help="XE captions / SCST 5 beams x images per step")
    parser.add_argument("--xe-epochs", type=int, default=2)
    parser.add_argument("--xe-steps", type=int, default=150, help="steps per XE epoch")
    parser.add_argument("--scst-epochs", type=int, default=1)
    parser.add_argument("--scst-steps", type=int, default=40, help="steps per SCST epoch")
    parser.add_argument("--scst-learning-rate", type=float, default=5e-5)
    parser.add_argument("--val-images", type=int, default=200)
    parser.add_argument("--train-backbone", default="all", help="model.image_encoder.train_backbone")
    args = parser.parse_args(argv)

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from report import describe_cpu, write_report  # this folder

    from tfcaption.data.catalog import resolve_dataset

    work = args.work_dir or tempfile.mkdtemp(prefix="blip_finetune-")
    data_dir = resolve_dataset("shapes", verbose=False)
    checkpoint, imported, tuned = (os.path.join(work, name) for name in ("checkpoint", "imported", "tuned"))
    config = write_checkpoint(checkpoint, caption_words(data_dir), args)
    run(["tfcaption.cli.import_hub", checkpoint, imported, "--overwrite"], os.path.join(work, "import.log"))
    before = val_cider_of(imported, data_dir, args.val_images)

    phases = [{"task": "xe", "epochs": args.xe_epochs, "steps_per_epoch": args.xe_steps},
              {"task": "scst", "epochs": args.scst_epochs, "steps_per_epoch": args.scst_steps}]
    sets = {"train.phases": json.dumps(phases), "train.batch_size": args.batch_size, "train.warmup_steps": 100,
            "train.early_stopping_patience": 0, "train.scst_learning_rate": args.scst_learning_rate,
            "train.val_images": args.val_images, "model.image_encoder.train_backbone": args.train_backbone,
            "model.dtype_policy": "float32", "decode.eval_splits": '["test"]', "train.tensorboard_images": 0}
    if os.path.isdir(tuned):
        import shutil

        shutil.rmtree(tuned)
    command = ["tfcaption.cli.train", "--init-from", imported, "--output-dir", tuned, "--no-export"]
    seconds = run(command + [a for key, value in sets.items() for a in ("--set", f"{key}={value}")],
                  os.path.join(work, "train.log"))
    with open(os.path.join(tuned, "history.jsonl")) as f:
        history = [json.loads(line) for line in f]
    with open(os.path.join(tuned, "report.json")) as f:
        report = json.load(f)
    after_xe = max(r["val_cider_d"] for r in history if r["task"] == "xe")
    after_scst = max(r["val_cider_d"] for r in history if r["task"] == "scst")
    final = val_cider_of(tuned, data_dir, args.val_images)  # the run's best weights, measured again
    machine = describe_cpu()
    parameters = json.load(open(os.path.join(imported, "import.json")))["parameters"]

    rows = [("imported (random weights)", before), ("after XE", after_xe), ("after SCST", after_scst)]
    print(f"BLIP-layout model ({parameters / 1e6:.2f}M parameters: vision {args.vision_layers} layers, text "
          f"{args.text_layers} layers, width {args.width}, {args.image_size} px), shapes, tower "
          f"{args.train_backbone}; {machine}")
    print(f"{'stage':28s} val CIDEr-D (greedy, {args.val_images} images)")
    for name, value in rows:
        print(f"{name:28s} {100 * value:8.1f}")
    beam = json.load(open(os.path.join(tuned, "config.json")))["decode"]["beam_size"]
    print(f"test CIDEr-D of the run (report.json, beam {beam}): {100 * report['test']['model']['cider_d']:.1f}; "
          f"tfcaption-train took {seconds / 60:.1f} min (training, validation, evaluation)")
    result = {
        "machine": machine, "parameters": parameters, "settings": vars(args), "phases": phases,
        "val_cider_d": {"imported": before, "after_xe": after_xe, "after_scst": after_scst,
                        "final_best_weights": final},
        "test": report["test"], "history": history, "train_minutes": seconds / 60, "checkpoint_config": config,
    }
    write_report(args.out, result)


if __name__ == "__main__":
    main()
