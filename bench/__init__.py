"""Benchmarks of leptos_sync against named peers; run ``python -m bench``."""
