"""Kill -9 at random moments: the station many times over a scan run, the server (bridge)
and the broker now and then. Every record whose green light was shown is stored by the
server exactly once.

This is the short version CI runs (dozens of kills); `CHAOS_KILLS=1000` makes it long.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ServerProcess
from edge.app import Station
from edge.config import load_station_config
from edge.drivers.fake import ListSource
from qrgate.samples import cccd, write_qr_png

KILLS = int(os.environ.get("CHAOS_KILLS", "24"))
PEOPLE = 60
pytestmark = pytest.mark.timeout(120 + 6 * KILLS)


def test_station_killed_at_random_loses_nothing_it_showed_as_accepted(tmp_path, server_env):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(PEOPLE):
        write_qr_png(cccd(f"0793{i:08d}", "", f"Vũ Thị Ngọc {i}", "01011995", "Nữ", "Nam Định", "01012022"),
                     images / f"{i:03d}.png", scale=3)
    setup = server_env.add_station("gate-chaos", tmp_path / "st",
                                   source={"kind": "folder", "path": str(images)},
                                   feedback={"indicators": "gpio", "pin_factory": "mock", "panel": "dummy"},
                                   mode="entry", station_options={"resend_after_s": 1.0})
    text = setup.config_path.read_text().replace("repeat_window_s = 30.0", "repeat_window_s = 3600.0")
    setup.config_path.write_text(text)
    server = ServerProcess(server_env.config.path, tmp_path / "server.log")
    server.start()
    rng = random.Random(20211)
    shown: set[int] = set()
    log = tmp_path / "station.log"
    try:
        for kill in range(KILLS):
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    [str(Path(sys.executable).parent / "qrgate-edge"), "-v", "run", "--config", str(setup.config_path)],
                    stdout=out, stderr=out)
                try:
                    proc.wait(timeout=rng.uniform(0.6, 1.8))  # the moment of the kill: random, not a sync
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(timeout=10)
            shown |= {int(m) for m in re.findall(rb"recorded seq (\d+)", log.read_bytes())}
            if kill % 6 == 5:
                server_env.broker.stop(kill=True)
                server_env.broker.start()
            if kill % 4 == 2:
                server.kill()  # wherever it is: mid-batch, between a commit and its ack
                server.start()
        assert shown, "the station never got far enough to record anything"
        # Finally let the station run to the end and deliver everything.
        station = Station(load_station_config(setup.config_path), source=ListSource([]))
        station.start()
        try:
            assert station.publisher.wait_drained(90), f"left: {station.outbox.backlog()}"
        finally:
            station.close()
    finally:
        server.stop()
    stored = [r[0] for r in server_env.storage.db.execute(
        "SELECT seq FROM checkins WHERE station_id = 'gate-chaos'")]
    assert len(stored) == len(set(stored))  # exactly once
    missing = shown - set(stored)
    assert not missing, f"shown as accepted but not stored: {sorted(missing)}"
    print(f"{KILLS} kills, {len(shown)} shown accepted, {len(stored)} stored")
    names = {r[0] for r in server_env.storage.db.execute("SELECT name FROM checkins")}
    assert len(names) == len(stored)  # and never the same person twice (entry, 1 h window)
