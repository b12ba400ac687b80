"""infermeter: benchmark LLM inference servers and prove the numbers."""

__version__ = "0.1.0"
