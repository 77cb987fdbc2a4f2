"""ScheduleMetrics: cron fires by schedule, and ticks skipped (misfires, overlaps)."""

from __future__ import annotations

from conveyor_server.core.schedules.book import FireOutcome
from conveyor_server.service.metrics.histogram import LabelCap

MAX_SCHEDULES = 100


class ScheduleMetrics:
    def __init__(self, max_schedules: int = MAX_SCHEDULES) -> None:
        self.schedule_label = LabelCap(max_schedules)
        self.fires: dict[str, int] = {}
        self.misfires = 0
        self.overlap_skips = 0

    def fired(self, outcome: FireOutcome) -> None:
        fires = self.fires
        for fire in outcome.fires:
            label = self.schedule_label(fire.schedule)
            fires[label] = fires.get(label, 0) + 1
        self.misfires += outcome.misfires_skipped
        self.overlap_skips += outcome.overlap_skips
