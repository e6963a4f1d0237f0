"""The vocabulary the try-on nodes share: garment categories, the ATR human-parsing labels, the "none" choice."""

from __future__ import annotations

# What the garment replaces (IDM-VTON / OOTDiffusion DressCode categories), in the order the nodes list them.
CATEGORIES = ("upper_body", "lower_body", "dresses")

# The choice that switches an optional model off in a node's model list.
NONE = "none"
