"""Whole pipelines on the local cloud, end to end."""
