"""Every screen a station shows, as enlarged PNG files: pictures for the technician's guide."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from edge.display.screens import render_idle, render_message, render_result
from edge.outcome import Outcome, Result, StationState

VENUE = "Nhà máy Dệt Phú Thọ - Cổng 2"


def gallery() -> dict[str, Image.Image]:
    online = StationState(venue=VENUE, mode="toggle", online=True)
    offline = StationState(venue=VENUE, mode="toggle", online=False, backlog=37)
    return {
        "idle": render_idle(online),
        "idle-offline": render_idle(offline),
        "idle-fault-storage": render_idle(StationState(venue=VENUE, fault="storage")),
        "idle-fault-camera": render_idle(StationState(venue=VENUE, fault="camera", online=True)),
        "accepted-in": render_result(Outcome(Result.ACCEPTED, direction="in", masked_name="Nguyễn V** L**"), online),
        "accepted-out": render_result(Outcome(Result.ACCEPTED, direction="out", masked_name="Nguyễn V** L**"), online),
        "accepted-offline": render_result(Outcome(Result.ACCEPTED_OFFLINE, direction="in",
                                                  masked_name="Trần T** H*"), offline),
        "already-counted": render_result(Outcome(Result.ALREADY_COUNTED, direction="in",
                                                 masked_name="Lê V*** H***"), online),
        "refused": render_result(Outcome(Result.REFUSED, reason="unknown_format"), online),
        "refused-expired-pass": render_result(Outcome(Result.REFUSED, reason="expired"), online),
        "fault": render_result(Outcome(Result.FAULT, reason="storage"), offline),
        "setup-scan-code": render_message("QUÉT MÃ CÀI ĐẶT", "Đưa mã vào camera", "Scan the setup code"),
        "setup-done": render_message("ĐÃ CÀI ĐẶT", "st-3f9a1c20"),
        "setup-failed": render_message("CHƯA CÀI ĐƯỢC", "Xin mã cài đặt mới", "this enrolment code has expired"),
    }


def export_gallery(folder: Path, *, scale: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, image in gallery().items():
        big = image.convert("L").resize((image.width * scale, image.height * scale), Image.NEAREST)
        path = folder / f"screen-{name}.png"
        big.save(path)
        paths.append(path)
    return paths
