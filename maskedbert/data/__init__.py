"""Task registry and datasets (real tasks through `datasets`, imported lazily; offline synthetic tasks)."""
