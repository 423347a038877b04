"""Hugging Face interop: a transformers model class around Mythos, and the export writer (`mythos-export --format hf`).
Needs the optional extra `.[hf]` (transformers, lm-eval, protobuf)."""
