"""Hugging Face Hub checkpoints (transformers' layouts) read without torch."""
