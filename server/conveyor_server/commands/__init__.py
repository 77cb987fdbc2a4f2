"""Subcommands of `conveyor` for people, built on the public client."""
