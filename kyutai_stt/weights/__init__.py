"""Checkpoints in, model packages out: reading official checkpoints, quantising, writing and reading packages,
the model cache, the tokenizer."""
