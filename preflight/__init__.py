"""Offline checks of a sweep before it reaches a GPU: config, data source, tokenizer packages,
parameter counts of the real architecture, peak memory, FLOPs and GPU-hours (``make preflight``)."""
