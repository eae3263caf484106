"""Shared code that the toy function gets from its layer."""

GREETING = "hello from the layer"
