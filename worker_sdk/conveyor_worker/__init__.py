"""Conveyor worker SDK."""
