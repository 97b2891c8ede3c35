"""`qrgate-edge selftest` against a real broker: what a technician reads on site."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from qrgate.samples import demo_samples, write_qr_png


def selftest(config: Path):
    out = subprocess.run([str(Path(sys.executable).parent / "qrgate-edge"), "selftest", "--json", "--config",
                          str(config)], capture_output=True, text=True, timeout=60)
    return out.returncode, {c["part"]: c for c in map(json.loads, out.stdout.splitlines())}


def make_station(tmp_path, server_env):
    images = tmp_path / "images"
    images.mkdir()
    write_qr_png(demo_samples()[0].text, images / "a.png")
    setup = server_env.add_station("gate-7", tmp_path / "station", source={"kind": "folder", "path": str(images)})
    (tmp_path / "station" / "state").mkdir(exist_ok=True)
    return setup.config_path


def test_a_healthy_station_passes_every_check(tmp_path, server_env):
    code, checks = selftest(make_station(tmp_path, server_env))
    assert code == 0, checks
    assert checks["storage"]["status"] == "ok" and "0 record(s) waiting" in checks["storage"]["message"]
    assert checks["camera"]["status"] == "ok" and "picture received" in checks["camera"]["message"]
    assert checks["pins"]["status"] == "ok" and checks["screen"]["status"] == "ok"
    assert checks["broker"]["status"] == "ok" and "connected over TLS as gate-7" in checks["broker"]["message"]
    assert checks["clock"]["status"] in ("ok", "warn")


def test_wrong_password_and_missing_broker_are_explained(tmp_path, server_env):
    config = make_station(tmp_path, server_env)
    (tmp_path / "station" / "mqtt.password").write_text("not-the-password\n")
    code, checks = selftest(config)
    assert code == 1
    assert "refused this station's name or password" in checks["broker"]["message"]
    server_env.broker.stop()
    code, checks = selftest(config)
    assert "cannot reach 127.0.0.1:" in checks["broker"]["message"]
    assert "is the server running?" in checks["broker"]["message"]


def test_a_missing_camera_folder_and_a_readable_key_are_failures(tmp_path, server_env):
    config = make_station(tmp_path, server_env)
    text = config.read_text().replace(str(tmp_path / "images"), str(tmp_path / "nowhere"))
    config.write_text(text)
    key = tmp_path / "station" / "state" / "station.key"
    os.chmod(key, 0o644)
    code, checks = selftest(config)
    assert code == 1
    assert checks["camera"]["status"] == "fail" and "nowhere" in checks["camera"]["message"]
    assert checks["storage"]["status"] == "fail" and f"chmod 600 {key}" in checks["storage"]["message"]
