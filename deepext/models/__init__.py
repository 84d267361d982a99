"""Models: tiny test models, base model registry, GGUF import."""
