"""The operator's releases page (/fleet/releases): each published release and its wave
(updated, failed, rolled back, under way, not yet seen), the forms that start, widen,
stop and resume a wave, and each station's group and update state. Every change asks
first (data-confirm), is audited, says what it did, and tells the stations over MQTT
to look now (the retained notice on the release topic)."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from qrgate.updates import VERSION_RE, version_key
from server.releases.service import ReleaseService
from server.releases.waves import DEFAULT_STOP_AT, WaveError, parse_groups, parse_percent
from server.web import i18n
from server.web.deps import Services, Svc, Visitor, operator, operator_form
from server.web.pages import flash, render

logger = logging.getLogger(__name__)
router = APIRouter()

i18n.register({
    "audit.qrgate.release.wave": ("Bắt đầu hoặc mở rộng đợt cập nhật", "Started or widened a release wave"),
    "audit.qrgate.release.wave_stopped": ("Dừng đợt cập nhật", "Stopped a release wave"),
    "audit.qrgate.release.wave_resumed": ("Tiếp tục đợt cập nhật", "Resumed a release wave"),
    "audit.qrgate.station.group": ("Đổi nhóm cập nhật của trạm", "Changed a station's update group"),
    "releases.title": ("Cập nhật phần mềm trạm", "Station software updates"),
    "releases.link": ("Cập nhật phần mềm", "Software updates"),
    "releases.explain": ("Bản phát hành mới chỉ đến trạm khi bạn mở một đợt: một tỉ lệ phần trăm số trạm, một hoặc "
                         "nhiều nhóm trạm, hoặc cả hai. Trạm tự kiểm tra chữ ký của bản phát hành, cài bên cạnh bản "
                         "đang chạy và tự quay lại bản cũ nếu bản mới không chạy tốt. Đợt tự dừng khi số trạm lỗi "
                         "vượt ngưỡng.",
                         "A new release reaches stations only when you start a wave: a percentage of the stations, "
                         "one or more groups of stations, or both. Each station checks the release's signatures, "
                         "installs it beside the running one and switches back by itself if it does not run "
                         "well. A wave stops by itself when too many stations fail."),
    "releases.none": ("Chưa có bản phát hành nào trên máy chủ này.", "No release is published on this server."),
    "releases.version": ("Bản", "Release"),
    "releases.wave": ("Đợt cập nhật", "Wave"),
    "releases.held": ("Chưa phát cho trạm nào", "Not released to any station"),
    "releases.rolling": ("Đang phát", "Rolling out"),
    "releases.stopped": ("Đã dừng", "Stopped"),
    "releases.to": ("{percent}% số trạm", "{percent}% of stations"),
    "releases.groups": ("nhóm {groups}", "group(s) {groups}"),
    "releases.targeted": ("{count} trạm trong đợt", "{count} station(s) in the wave"),
    "releases.kept": ("Đã cập nhật", "Updated"),
    "releases.failed": ("Lỗi", "Failed"),
    "releases.rolled_back": ("Đã quay lại bản cũ", "Rolled back"),
    "releases.under_way": ("Đang cập nhật", "Updating"),
    "releases.not_seen": ("Chưa thấy trạm báo", "Not yet seen"),
    "releases.stop_at": ("Tự dừng khi số trạm lỗi đạt (%)", "Stop by itself when failures reach (%)"),
    "releases.percent": ("Tỉ lệ số trạm (%)", "Share of stations (%)"),
    "releases.group_names": ("Nhóm trạm (cách nhau bằng dấu phẩy)", "Station groups (comma separated)"),
    "releases.start": ("Phát đợt này", "Release to this wave"),
    "releases.start_confirm": ("Phát bản {version} cho các trạm đã chọn? Các trạm sẽ cài và khởi động lại bản mới.",
                               "Release {version} to the chosen stations? They will install it and restart."),
    "releases.stop": ("Dừng đợt", "Stop the wave"),
    "releases.stop_confirm": ("Dừng đợt cập nhật bản {version}? Trạm đã cập nhật giữ bản mới; trạm chưa cập nhật "
                              "không nhận bản này nữa.",
                              "Stop the wave of {version}? Stations that updated keep it; the others no longer "
                              "get it."),
    "releases.resume": ("Tiếp tục đợt", "Resume the wave"),
    "releases.resume_confirm": ("Tiếp tục phát bản {version}?", "Resume releasing {version}?"),
    "releases.stations": ("Trạm và nhóm cập nhật", "Stations and their update groups"),
    "releases.group": ("Nhóm", "Group"),
    "releases.set_group": ("Lưu nhóm", "Save group"),
    "releases.update": ("Cập nhật gần nhất", "Last update"),
    "releases.no_report": ("Chưa báo", "No report yet"),
    "releases.error.group": ("Chưa làm được: tên nhóm chỉ gồm chữ thường không dấu, số, - và _ (tối đa 40 ký tự), "
                             "tối đa 20 nhóm.", "Not done: a group name is a-z, 0-9, - and _ (up to 40), "
                             "at most 20 groups."),
    "releases.error.percent": ("Chưa làm được: tỉ lệ là số nguyên từ 0 đến 100.",
                               "Not done: a share is a whole number from 0 to 100."),
    "releases.error.unpublished": ("Chưa làm được: bản này chưa được đưa lên máy chủ.",
                                   "Not done: this release is not published on this server."),
    "releases.error.empty": ("Chưa làm được: hãy chọn tỉ lệ lớn hơn 0 hoặc ít nhất một nhóm.",
                             "Not done: choose a share above 0 or at least one group."),
    "releases.error.no_wave": ("Chưa làm được: bản này chưa có đợt cập nhật.", "Not done: this release has no wave."),
    "releases.error.station": ("Chưa làm được: không có trạm này.", "Not done: no such station."),
    "releases.error.one_group": ("Chưa làm được: mỗi trạm chỉ thuộc một nhóm.", "Not done: a station is in one group."),
    "releases.stopped_by_itself": ("Đợt tự dừng: {failed} trên {targeted} trạm lỗi hoặc phải quay lại bản cũ "
                                   "(ngưỡng {stop_at}%).",
                                   "Stopped by itself: {failed} of {targeted} station(s) failed or rolled back "
                                   "(the limit is {stop_at}%)."),
    "releases.stopped_by_operator": ("Người vận hành đã dừng đợt.", "Stopped by the operator."),
    "releases.since": ("từ {when}", "since {when}"),
    "update.idle": ("Đang chạy bản mới nhất được phép", "Runs the newest release allowed"),
    "update.downloading": ("Đang tải bản mới", "Downloading a release"),
    "update.installing": ("Đang cài bản mới", "Installing a release"),
    "update.trying": ("Đang chạy thử bản mới", "Trying a new release"),
    "update.kept": ("Đã cập nhật", "Updated"),
    "update.rolled_back": ("Đã quay lại bản cũ", "Rolled back"),
    "update.refused": ("Từ chối bản phát hành (sai chữ ký hoặc hết hạn)", "Refused a release (bad signature or expired)"),
    "update.failed": ("Cài không được", "Could not install"),
    "update.unreachable": ("Không liên lạc được máy chủ", "Could not reach the server"),
    "flash.wave_started": ("Đã phát đợt cập nhật. Các trạm trong đợt sẽ tải và cài bản mới.",
                           "The wave is out: its stations will download and install the release."),
    "flash.wave_stopped": ("Đã dừng đợt cập nhật.", "The wave is stopped."),
    "flash.wave_resumed": ("Đã tiếp tục đợt cập nhật.", "The wave is resumed."),
    "flash.group_saved": ("Đã lưu nhóm của trạm.", "The station's group is saved."),
})

# Why a wave stopped, in words: the service's English reason is kept for the log.
STOP_WORDS = {"stopped by the operator": "releases.stopped_by_operator"}


def _releases(request: Request) -> ReleaseService:
    service = getattr(request.app.state, "releases", None)
    if service is None:
        raise HTTPException(404, "no releases are served here")
    return service


def _when(svc: Services, ms: int | None) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, svc.tz).strftime("%d/%m/%Y %H:%M") if ms else ""


def _page(svc: Services, request: Request, who: Visitor, status_code: int = 200, **context: Any) -> Response:
    releases = _releases(request)
    waves = {w["version"]: w for w in releases.waves.view()}
    for wave in waves.values():
        wave["since"] = _when(svc, wave["changed_ms"])
        failed = wave["counts"]["failed"] + wave["counts"]["rolled_back"]
        wave["stop_words"] = STOP_WORDS.get(wave["reason"], "releases.stopped_by_itself" if failed else "")
    published = sorted(set(releases.published()) | set(waves), key=version_key,
                       reverse=True)
    updates = releases.station_updates()
    groups = releases.waves.groups()
    reachable = set(releases.waves.fleet())  # phones and self check-in sources take no release
    stations = [dict(r, group=groups.get(r["station_id"], ""), last=updates.get(r["station_id"]))
                for r in svc.fleet.rows(int(svc.clock() * 1000)) if r["station_id"] in reachable]
    return render(request, who, "releases.html", status_code, published=published, waves=waves, stations=stations,
                  default_stop_at=DEFAULT_STOP_AT, **context)


@router.get("/fleet/releases", response_class=HTMLResponse, include_in_schema=False)
def releases_page(svc: Svc, request: Request, who: Visitor = Depends(operator)):
    return _page(svc, request, who)


@router.get("/api/releases/waves", tags=["stations"])
def api_waves(request: Request, who: Visitor = Depends(operator)):
    """Every wave with its counts (operators)."""
    return {"waves": _releases(request).waves.view(), "published": _releases(request).published()}


def _version(version: str) -> str:
    if not VERSION_RE.match(version):
        raise HTTPException(404)
    return version


def _announce(request: Request, version: str) -> None:
    """The retained notice: every station looks now (its wave decides what it takes)."""
    announcer = getattr(request.app.state, "release_announcer", None)
    if announcer is None:
        return
    try:
        announcer(version)
    except Exception as exc:  # the stations still look on their timer: say so in the log
        logger.error("release %s: the notice could not be published (%s); stations look on their timer", version, exc)


def _change(svc: Services, request: Request, who: Visitor, change, action: str, flash_key: str,
            announce: str = "", **audit: Any) -> Response:
    """Make ``change`` (given the audit entry's fields, to add to); refused in words,
    else audited, announced to the stations when ``announce`` names a version, and said."""
    try:
        change(audit)
    except WaveError as exc:
        return _page(svc, request, who, 400, error="releases.error." + exc.key)
    svc.audit.record(action, account=who.account, ip=who.ip, **audit)
    if announce:
        _announce(request, announce)
    return flash(request, RedirectResponse("/fleet/releases", 303), flash_key)


@router.post("/fleet/releases/{version}/wave", include_in_schema=False)
def start_wave(svc: Svc, request: Request, version: str, checked=Depends(operator_form)):
    who, form = checked
    waves = _releases(request).waves

    def start(audit: dict) -> None:
        percent = parse_percent(form.get("percent", "0"))
        stop_at = parse_percent(form.get("stop_at", DEFAULT_STOP_AT), "stop_at")
        groups = parse_groups(form.get("groups", ""))
        wave = waves.start(_version(version), percent, groups, stop_at)
        audit.update(percent=percent, groups=groups, stop_at=stop_at, targeted=wave["targeted"])

    return _change(svc, request, who, start, "qrgate.release.wave", "flash.wave_started", version, version=version)


@router.post("/fleet/releases/{version}/stop", include_in_schema=False)
def stop_wave(svc: Svc, request: Request, version: str, checked=Depends(operator_form)):
    waves = _releases(request).waves
    return _change(svc, request, checked[0], lambda audit: waves.stop(_version(version)),
                   "qrgate.release.wave_stopped", "flash.wave_stopped", version=version)


@router.post("/fleet/releases/{version}/resume", include_in_schema=False)
def resume_wave(svc: Svc, request: Request, version: str, checked=Depends(operator_form)):
    waves = _releases(request).waves
    return _change(svc, request, checked[0], lambda audit: waves.resume(_version(version)),
                   "qrgate.release.wave_resumed", "flash.wave_resumed", version, version=version)


@router.post("/fleet/{station_id}/group", include_in_schema=False)
def station_group(svc: Svc, request: Request, station_id: str, checked=Depends(operator_form)):
    who, form = checked
    group = str(form.get("group", ""))[:100]
    waves = _releases(request).waves
    return _change(svc, request, who, lambda audit: waves.set_group(station_id, group), "qrgate.station.group",
                   "flash.group_saved", station=station_id, group=group.strip())
