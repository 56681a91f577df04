"""Training loops of the tiny family (CPU by default, accelerate-compatible)."""
