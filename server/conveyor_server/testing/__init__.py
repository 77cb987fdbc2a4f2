"""Test and benchmark helpers: a real `conveyor serve` subprocess."""

from conveyor_server.testing.broker_process import BrokerProcess

__all__ = ["BrokerProcess"]
