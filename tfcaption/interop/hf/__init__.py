"""Hugging Face Hub checkpoints (issue 30): config.json and weight files to tfcaption parts, without torch."""
