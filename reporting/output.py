"""Atomic writes for tables and figures: the repository's one helper (tasks.files)."""
from tasks.files import atomic_path, write_bytes, write_text

__all__ = ["atomic_path", "write_bytes", "write_text"]
