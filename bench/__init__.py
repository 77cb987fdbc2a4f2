"""Conveyor's benchmark suite: fresh brokers, fixed counts, medians, CPU per process."""
