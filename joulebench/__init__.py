"""joulebench: energy-versus-quality benchmarks of quantized, fine-tuned and pruned LLMs."""

__version__ = "0.1.0"
