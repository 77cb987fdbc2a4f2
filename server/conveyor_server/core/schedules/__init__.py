"""Schedules: the cron/interval model, next-fire arithmetic and the book that fires them."""
