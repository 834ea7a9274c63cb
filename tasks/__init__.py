"""Prefect tasks: 3-15 line wrappers, each over one tailguard library call."""
