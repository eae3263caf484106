"""Tooling for the MLOps pipeline: CLI, docker-free local cloud, reports and sample data."""
