"""Conveyor broker server: the `conveyor serve` daemon."""

__version__ = "0.1.0"
