"""deploy/: the alert rules pass `promtool check rules` and their unit tests
(deploy/alerts_test.yml, `promtool test rules`); the scrape config passes `check config`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.conftest import require_tool

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ALERTS = ("ConveyorBrokerDown", "ConveyorQueueGrowing", "ConveyorOldestTaskTooOld",
          "ConveyorDeadTasksRising", "ConveyorStoreNearFull")  # fmt: skip


def _promtool(*args: str, cwd: Path = DEPLOY) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_alert_rules_pass_promtool_check_rules() -> None:
    checked = _promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout


def test_alert_rule_unit_tests_pass() -> None:
    tested = _promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_unit_test() -> None:
    rules = (DEPLOY / "alerts.yml").read_text()
    tests = (DEPLOY / "alerts_test.yml").read_text()
    for alert in ALERTS:
        assert f"alert: {alert}" in rules
        assert f"alertname: {alert}" in tests


def test_the_unit_tests_fail_when_a_rule_changes(tmp_path: Path) -> None:
    """The unit tests can fail: with a threshold moved, promtool reports it."""
    shutil.copy(DEPLOY / "alerts_test.yml", tmp_path)
    rules = (DEPLOY / "alerts.yml").read_text()
    (tmp_path / "alerts.yml").write_text(rules.replace("> 300", "> 3000"))
    tested = _promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert tested.returncode != 0
    assert "ConveyorOldestTaskTooOld" in tested.stdout + tested.stderr


def test_the_scrape_config_passes_promtool_check_config() -> None:
    checked = _promtool("check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
