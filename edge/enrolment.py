"""A new station enrols itself: it shows "scan setup code" and reads the code with its
own camera or scanner, then trades it for its binding (provisioning/enrol_client.py)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from edge.config import FeedbackSection
from edge.display.screens import render_message
from qrgate.config import load_section, read_toml
from qrgate.errors import ConfigError, QrgateError, UserError

logger = logging.getLogger(__name__)


def enrol_from_code(config_path: Path, *, timeout: float = 600.0, source=None, decoder=None, screen=None) -> Path:
    """Wait for an enrolment QR in front of the station, enrol, rewrite ``config_path``.

    ``config_path`` needs only [source] and [feedback]; they are kept in the new file.
    """
    from provisioning.enrol_client import check_writable, enrol, parse_enrol_code
    from provisioning.station import state_path

    config_path = Path(config_path).resolve()
    data = read_toml(config_path)
    source_options = data.get("source")
    if not isinstance(source_options, dict) or "kind" not in source_options:
        raise ConfigError(f"{config_path}: section [source]: option 'kind' is required")
    feedback_options = data.get("feedback", {})
    # install.sh writes the setup file with [station] state_dir = "/var/lib/qrgate": the one
    # folder the unit may write. Kept in the enrolled file; a bare setup file keeps "state".
    station_options = data.get("station", {})
    state_dir = station_options.get("state_dir", "state") if isinstance(station_options, dict) else "state"
    if not isinstance(state_dir, str) or not state_dir:
        raise ConfigError(f"{config_path}: section [station]: option 'state_dir' must be a folder path")
    check_writable(config_path.parent, state_path(config_path.parent, state_dir))  # before a code is spent
    feedback = load_section(data, "feedback", FeedbackSection, config_path)
    if source is None:
        from edge.drivers.sources import open_source

        options = dict(source_options)
        source = open_source(options.pop("kind"), **options)
    if decoder is None:
        from edge.decoder import get_decoder

        decoder = get_decoder("default")
    if screen is None and feedback.panel != "none":
        from edge.display.panel import Screen, open_panel

        screen = Screen(open_panel(feedback.panel, i2c_port=feedback.i2c_port, address=feedback.i2c_address))

    def show(headline: str, line: str = "", detail: str = "") -> None:
        logger.info("screen: %s %s %s", headline, line, detail)
        if screen is not None:
            screen.show(render_message(headline, line, detail))

    show("QUÉT MÃ CÀI ĐẶT", "Đưa mã vào camera", "Scan the setup code")
    deadline = time.monotonic() + timeout
    try:
        for capture in source.captures():
            if time.monotonic() > deadline:
                break
            texts = [d.text for d in decoder.decode(capture.gray)] if hasattr(capture, "gray") else [capture.text]
            for text in texts:
                try:
                    url, token = parse_enrol_code(text)
                except UserError as exc:
                    show("QUÉT MÃ CÀI ĐẶT", "Không phải mã cài đặt", str(exc)[:40])
                    continue
                show("ĐANG CÀI ĐẶT…", url)
                try:
                    path = enrol(url, token, config_path.parent, source=source_options, feedback=feedback_options,
                                 state_dir=state_dir)
                except QrgateError as exc:
                    logger.error("enrolment failed: %s", exc)
                    show("CHƯA CÀI ĐƯỢC", "Xin mã cài đặt mới", str(exc)[:60])
                    continue
                show("ĐÃ CÀI ĐẶT", path.parent.name)
                return path
    finally:
        source.close()
    raise UserError(f"no usable setup code was shown within {timeout:.0f} s")
