"""The console scripts: help from docstrings, `prog: error:` and exit 1 on user errors,
and the technician's decode tool against the photographed sample sets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import database_url, require_qr_photos, storage_for

BIN = Path(sys.executable).parent
SCRIPTS = ["qrgate-edge", "qrgate-server", "qrgate-provision", "qrgate-demo"]


def run(*args, timeout=120):
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"})


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_explains_itself(script):
    out = run(script, "--help")
    assert out.returncode == 0
    assert "usage: " + script in out.stdout


def test_subcommand_help_comes_from_the_docstring():
    out = run("qrgate-edge", "decode", "--help")
    assert "Decode images with the station's decoder and payload parser." in out.stdout


@pytest.mark.parametrize("args, message", [
    (["qrgate-edge"], "qrgate-edge: error: the following arguments are required: COMMAND"),
    (["qrgate-edge", "frobnicate"], "qrgate-edge: error: argument COMMAND: invalid choice"),
    (["qrgate-server", "stats", "--config", "/nonexistent/server.toml"],
     "qrgate-server stats: error: /nonexistent/server.toml: file not found"),
    (["qrgate-provision", "broker", "--dir", "x", "--port", "99999"], "--port must be 1-65535"),
    (["qrgate-demo", "--web-port", "-5"], "qrgate-demo: error: --web-port must be 0-65535"),
])
def test_user_errors_exit_1_with_a_clear_message(args, message):
    out = run(*args)
    assert out.returncode == 1
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_config_errors_name_file_section_and_key(tmp_path):
    cfg = tmp_path / "station.toml"
    key = 'server_key = "NYBy1jZYgNGu6jKa35EhODhR7SGijjt16WXQ0s0WYlQ="\n'
    cfg.write_text('[station]\nid = "gate-1"\n' + key + '[policy]\nmode = "sideways"\n[source]\nkind = "folder"\n')
    out = run("qrgate-edge", "run", "--config", str(cfg))
    assert out.returncode == 1
    assert f"{cfg}: section [policy]: option 'mode' must be one of entry, exit, toggle, got 'sideways'" in out.stderr
    cfg.write_text('[station]\nid = "gate-1"\n' + key + 'holdd_s = 2\n[source]\nkind = "folder"\n')
    out = run("qrgate-edge", "run", "--config", str(cfg))
    assert "section [station]: option 'holdd_s' is not valid" in out.stderr


def test_decode_tool_reports_text_kind_and_refusals(tmp_path):
    from qrgate.samples import demo_samples, write_qr_png

    paths = []
    for sample in demo_samples():
        paths.append(str(write_qr_png(sample.text, tmp_path / f"{sample.name}.png")))
    (tmp_path / "blank.png").write_bytes((tmp_path / Path(paths[0]).name).read_bytes()[:40])
    out = run("qrgate-edge", "decode", "--json", *paths, str(tmp_path / "blank.png"))
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert out.returncode == 1  # the truncated file is unreadable
    by_name = {Path(line["path"]).stem: line for line in lines}
    assert by_name["01-cccd-nguyen-gia-manh"]["kind"] == "cccd" and by_name["01-cccd-nguyen-gia-manh"]["ok"]
    assert by_name["03-bhyt-le-viet-hung"]["kind"] == "bhyt"
    assert by_name["07-url"] == {**by_name["07-url"], "ok": False, "error": "unknown_format",
                                 "text": "https://example.com/khai-bao"}
    assert by_name["blank"]["error"].startswith("unreadable")
    assert all(set(line) == {"path", "ok", "text", "kind", "error", "ms"} for line in lines)


def test_decode_tool_reads_as_many_photographed_samples_as_raw_zxing_cpp():
    photos = require_qr_photos()
    import zxingcpp
    from PIL import Image

    expected = {}
    for txt in sorted(photos.glob("zxing-java-qrcode-*/*.txt")):
        if txt.name.endswith((".metadata.txt", ".result.txt")):
            continue
        images = [p for p in txt.parent.glob(txt.stem + ".*") if p.suffix != ".txt"]
        if images:
            expected[str(images[0])] = txt.read_bytes().decode("utf-8")
    raw = sum(
        1 for path, text in expected.items()
        if any(r.text == text for r in zxingcpp.read_barcodes(Image.open(path)))
    )
    out = run("qrgate-edge", "decode", "--json", *expected, timeout=300)
    ours = sum(1 for line in map(json.loads, out.stdout.splitlines()) if line["text"] == expected[line["path"]])
    assert len(expected) == 179
    assert ours >= raw, f"station decoder read {ours}, raw zxing-cpp {raw}"


def test_operators_make_and_withdraw_health_officers_by_area_and_it_is_audited(tmp_path):
    from server.accounts.accounts import Accounts
    from server.areas.areas import AreaDirectory
    from server.areas.officers import Officers
    from server.accounts.sms import DevSmsSender
    from server.config import load_server_config

    config = tmp_path / "server.toml"
    database = database_url(tmp_path)
    config.write_text('[server]\ndata_dir = "data"\n' + (f'database = "{database}"\n' if database else ""))
    out = run("qrgate-server", "officer-add", "--config", str(config), "--phone", "0912 486 419", "--area", "79")
    assert out.returncode == 0, out.stderr
    assert "is a health officer for" in out.stdout and "(province)" in out.stdout
    out = run("qrgate-server", "officer-add", "--config", str(config), "--phone", "0912486419", "--area", "=cmd|x")
    assert out.returncode == 1 and "no province or commune with code '=cmd|x'" in out.stderr and "Traceback" not in out.stderr

    storage = storage_for(load_server_config(config))
    accounts = Accounts(storage, DevSmsSender())
    officers = Officers(storage, AreaDirectory.load())
    account = accounts.account_for_phone("0912486419")
    assert [a.code for a in officers.areas_of(account.id)] == ["79"]
    out = run("qrgate-server", "officer-remove", "--config", str(config), "--phone", "0912486419", "--area", "79")
    assert out.returncode == 0, out.stderr
    assert officers.areas_of(account.id) == []
    out = run("qrgate-server", "officer-remove", "--config", str(config), "--phone", "0912486419", "--area", "79")
    assert out.returncode == 1 and "was not a health officer for area 79" in out.stderr
    actions = [r[0] for r in storage.sql.rows("SELECT action FROM audit_log ORDER BY id")]
    assert actions.count("qrgate.officer.granted") == 1 and actions.count("qrgate.officer.revoked") == 1
