"""Placeholder: filled in by its issue."""

NODES: dict = {}
