"""Conveyor benchmarks: start a broker on a temp dir and measure throughput."""
