"""Calling Qwen3-0.6B on vLLM from Python, sync and async; see README.md."""

__version__ = "0.1.0"
