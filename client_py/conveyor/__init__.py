"""Conveyor Python client."""
