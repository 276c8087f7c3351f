"""cwtool: compress a classifier for the edge without losing the cases that matter."""

__version__ = "0.1.0"
