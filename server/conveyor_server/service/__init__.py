"""The asyncio service layer: engine over the core, long-poll waiters, timers, cron loop."""
