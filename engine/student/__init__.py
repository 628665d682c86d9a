"""The student: SFT examples and encoding, weights, training runs (local or remote), GGUF export."""
