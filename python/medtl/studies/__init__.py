"""The studies: one package per paper, each registering itself (see medtl.registry)."""
