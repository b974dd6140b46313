"""Experiment pipelines: each module exposes main(argv) for the CLI."""
