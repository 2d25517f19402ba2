"""Smoke: a scan through the console chat, queue, worker process, nmap, rules and delivery."""

from __future__ import annotations

from harness import Chat, WorkerProcess

from bot.core.messages import ReplyKind
from bot.lab import voip_adapter
from bot.wiring import Runtime


def test_scan_of_lab_adapter_reports_telnet_critical(
    rt: Runtime, chat: Chat, worker: WorkerProcess, lab_address: str
) -> None:
    """An allowed scan of the simulated adapter comes back rating telnet critical."""
    rt.admin.allow(rt.operator, f"{lab_address}/32", lab=True, note="test")
    with voip_adapter(lab_address, privileged=False):
        reply = chat.scan(lab_address)
    assert reply.kind is ReplyKind.REPORT, reply.text
    assert reply.report is not None
    assert reply.report.risk.value == "critical"
