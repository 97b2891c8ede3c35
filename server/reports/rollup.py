"""The dashboards' daily roll-up of the check-ins (server.reports.dashboard reads it).

Counting 10 million check-ins on every request is too slow for a page, so the module
keeps ``dashboard_daily``: one row per (venue, local day) with the number of scans.
Triggers on ``checkins`` keep it in step with every INSERT and with the UPDATEs that
correct a station's clock (or move a check-in to another venue), whichever connection or
process writes; ``ensure_rollup`` creates it once, counting the rows already stored,
inside one write transaction so no check-in is missed or counted twice.

On SQLite the triggers are plain SQL. On PostgreSQL they call plpgsql functions and are
made on the partitioned ``checkins``, which clones them onto every partition, including
those attached later. An UPDATE that moves a check-in to another month's partition (a
clock correction) is carried out there as a DELETE and an INSERT: the AFTER UPDATE
trigger does not fire, the AFTER INSERT one does. So the old day is taken off by a
BEFORE UPDATE trigger (it fires either way), and the new day is counted by the AFTER
UPDATE trigger (same partition) or the AFTER INSERT one (moved). When a month's partition
is made, its rows leave the default partition by a DELETE and reach a standalone table
that is then attached: no trigger counts them twice, none takes them off.

Deleting check-ins (retention, or dropping a month's partition) does not change the
roll-up: its counts are not personal data, and a dashboard keeps showing how busy an area
was after the people's rows are gone. The local day is the UTC time plus one fixed
offset, the configured time zone's offset when the roll-up was made (Asia/Ho_Chi_Minh:
+07:00, no daylight saving time); it is stored in ``dashboard_meta`` and baked into the
triggers. See docs/dashboards.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from zoneinfo import ZoneInfo

from server.storage.sql import ddl_for

logger = logging.getLogger(__name__)

DAY_MS = 86_400_000
EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
ROLLUP_VERSION = "1"
# The triggers each engine needs in place (see the module doc).
TRIGGERS = {
    "sqlite": {"dashboard_checkin_insert", "dashboard_checkin_update"},
    "postgresql": {"dashboard_checkin_insert", "dashboard_checkin_update", "dashboard_checkin_leave"},
}


def utc_offset_s(tz: ZoneInfo, at: float | None = None) -> int:
    """The zone's offset from UTC in seconds at ``at`` (default: now)."""
    when = dt.datetime.fromtimestamp(time.time() if at is None else at, tz)
    return int(when.utcoffset().total_seconds())


def _day_sql(dialect: str, column: str, offset_ms: int) -> str:
    # floor((wall + offset) / day) for negative values too: integer division truncates
    # toward zero on both engines, so a wall clock before 1970 is moved down one day first.
    shifted = f"({column} + {offset_ms})"
    negative = f"({shifted} < 0)" if dialect == "sqlite" else f"({shifted} < 0)::int"
    return f"(({shifted} - {negative} * {DAY_MS - 1}) / {DAY_MS})"


def _meta(db) -> dict[str, str]:
    if not db.has_table("dashboard_meta"):
        return {}
    return dict(db.rows("SELECT key, value FROM dashboard_meta"))


def _rollup_objects(db) -> tuple[set[str], set[str]]:
    """The roll-up's triggers on ``checkins`` and indexes on ``venues`` that exist."""
    if db.dialect == "sqlite":
        rows = db.rows("SELECT type, name FROM sqlite_master WHERE type IN ('trigger', 'index')"
                       " AND tbl_name IN ('checkins', 'venues')")
        return {n for t, n in rows if t == "trigger"}, {n for t, n in rows if t == "index"}
    # The clones on the partitions have a parent; the triggers made here do not.
    triggers = {r[0] for r in db.rows(
        "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
        " WHERE c.relname = 'checkins' AND c.relnamespace = current_schema()::regnamespace"
        " AND NOT t.tgisinternal")}
    indexes = {r[0] for r in db.rows(
        "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'venues'")}
    return triggers, indexes


def _in_place(db, meta: dict[str, str], offset_s: int) -> bool:
    """Roll-up made for this offset, its triggers there, and the venues' area index
    (once the venue columns exist: server.venues.venues adds them)."""
    if meta.get("utc_offset_s") != str(offset_s) or meta.get("version") != ROLLUP_VERSION:
        return False
    triggers, indexes = _rollup_objects(db)
    if not TRIGGERS[db.dialect] <= triggers:
        return False
    return "dashboard_venues_area" in indexes or not _venues_have_areas(db)


def _venues_have_areas(db) -> bool:
    return {"province", "district", "ward"} <= db.columns("venues")


def rollup_offset_s(storage) -> int | None:
    """The UTC offset the roll-up counts local days with (None: no roll-up yet)."""
    value = _meta(storage.sql).get("utc_offset_s")
    return int(value) if value is not None else None


def ensure_rollup(storage, tz: ZoneInfo) -> int:
    """Make the daily roll-up and its triggers if they are missing or were made for
    another UTC offset; return the offset used. Cheap when all is in place: call it at
    start, before the bridge stores anything, and before each dashboard."""
    offset_s = utc_offset_s(tz)
    db = storage.sql
    if _in_place(db, _meta(db), offset_s):
        return offset_s
    with db.transaction(serial="dashboard_rollup"):
        if db.dialect == "postgresql":
            _hold_checkins(db)
        meta = _meta(db)  # another process may have done it while we waited
        if not _in_place(db, meta, offset_s):
            _build(db, offset_s, meta)
    return offset_s


def _hold_checkins(db) -> None:
    """PostgreSQL: no check-in is written between the count and the triggers. The
    partition lock comes first, as server.storage.postgres_schema takes it before locking
    the partitions when it makes or drops one."""
    from server.storage.postgres_schema import PARTITION_LOCK

    db.execute("SELECT pg_advisory_xact_lock(?)", [PARTITION_LOCK])
    db.execute("LOCK TABLE checkins IN SHARE ROW EXCLUSIVE MODE")


def _build(db, offset_s: int, meta: dict[str, str]) -> None:
    offset_ms = offset_s * 1000
    started = time.perf_counter()
    db.execute("CREATE TABLE IF NOT EXISTS dashboard_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute(ddl_for(db.dialect, "CREATE TABLE IF NOT EXISTS dashboard_daily (venue_id BIGINT NOT NULL,"
                                   " day BIGINT NOT NULL, scans BIGINT NOT NULL, PRIMARY KEY (venue_id, day))"
                                   " {without_rowid}"))
    if _venues_have_areas(db):
        db.execute("CREATE INDEX IF NOT EXISTS dashboard_venues_area ON venues (province, district, ward)")
    for name in sorted(TRIGGERS[db.dialect]):
        db.execute(f"DROP TRIGGER IF EXISTS {name}" + (" ON checkins" if db.dialect == "postgresql" else ""))
    day = _day_sql(db.dialect, "wall_ms", offset_ms)
    old_offset = meta.get("utc_offset_s")
    if old_offset == str(offset_s) and meta.get("version") == ROLLUP_VERSION:
        pass  # only the venues' index (or a dropped trigger) was missing: the counts stand
    elif old_offset is None or db.value("SELECT count(*) FROM dashboard_daily") == 0:
        db.execute("DELETE FROM dashboard_daily")
        db.execute(
            f"INSERT INTO dashboard_daily (venue_id, day, scans) SELECT venue_id, {day}, count(*) FROM checkins"
            " WHERE wall_ms IS NOT NULL GROUP BY venue_id, 2")
        logger.info("dashboard roll-up made from the stored check-ins (UTC offset %+d s)", offset_s)
    else:
        # The offset changed (the configured zone did): days whose check-ins are still
        # stored are counted again with the new offset; older days, whose rows retention
        # has deleted, keep the counts made with the old one.
        first = db.value("SELECT min(wall_ms) FROM checkins")
        if first is not None:
            keep_before = _floor_day(first + offset_ms) + 1
            db.execute("DELETE FROM dashboard_daily WHERE day >= ?", [keep_before])
            db.execute(
                f"INSERT INTO dashboard_daily (venue_id, day, scans) SELECT venue_id, {day}, count(*) FROM checkins"
                " WHERE wall_ms >= ? GROUP BY venue_id, 2", [keep_before * DAY_MS - offset_ms])
        logger.warning("dashboard roll-up recounted for UTC offset %+d s (was %s s)", offset_s, old_offset)
    if db.dialect == "sqlite":
        _sqlite_triggers(db, offset_ms)
    else:
        _postgresql_triggers(db, offset_ms)
    db.executemany("INSERT INTO dashboard_meta (key, value) VALUES (?, ?)"
                   " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                   [("utc_offset_s", str(offset_s)), ("version", ROLLUP_VERSION),
                    ("built_ms", str(int(time.time() * 1000)))])
    logger.info("dashboard roll-up ready in %.1f s", time.perf_counter() - started)


def _sqlite_triggers(db, offset_ms: int) -> None:
    new_day, old_day = _day_sql("sqlite", "NEW.wall_ms", offset_ms), _day_sql("sqlite", "OLD.wall_ms", offset_ms)
    db.execute(
        "CREATE TRIGGER dashboard_checkin_insert AFTER INSERT ON checkins WHEN NEW.wall_ms IS NOT NULL BEGIN"
        f" INSERT INTO dashboard_daily (venue_id, day, scans) VALUES (NEW.venue_id, {new_day}, 1)"
        " ON CONFLICT (venue_id, day) DO UPDATE SET scans = scans + 1; END")
    # A clock correction moves a check-in to its true day; most stay on the same day
    # and cost nothing more than the WHEN.
    db.execute(
        "CREATE TRIGGER dashboard_checkin_update AFTER UPDATE OF wall_ms, venue_id ON checkins"
        f" WHEN OLD.venue_id IS NOT NEW.venue_id OR {old_day} IS NOT {new_day} BEGIN"
        f" UPDATE dashboard_daily SET scans = scans - 1 WHERE venue_id = OLD.venue_id AND day = {old_day};"
        f" DELETE FROM dashboard_daily WHERE venue_id = OLD.venue_id AND day = {old_day} AND scans <= 0;"
        f" INSERT INTO dashboard_daily (venue_id, day, scans) SELECT NEW.venue_id, {new_day}, 1"
        " WHERE NEW.wall_ms IS NOT NULL ON CONFLICT (venue_id, day) DO UPDATE SET scans = scans + 1; END")


def _postgresql_triggers(db, offset_ms: int) -> None:
    new_day, old_day = (_day_sql("postgresql", "NEW.wall_ms", offset_ms),
                        _day_sql("postgresql", "OLD.wall_ms", offset_ms))
    db.execute(
        "CREATE OR REPLACE FUNCTION dashboard_count_new() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        f" INSERT INTO dashboard_daily (venue_id, day, scans) VALUES (NEW.venue_id, {new_day}, 1)"
        " ON CONFLICT (venue_id, day) DO UPDATE SET scans = dashboard_daily.scans + 1;"
        " RETURN NULL; END $$")
    db.execute(
        "CREATE OR REPLACE FUNCTION dashboard_count_old() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        f" UPDATE dashboard_daily SET scans = scans - 1 WHERE venue_id = OLD.venue_id AND day = {old_day};"
        f" DELETE FROM dashboard_daily WHERE venue_id = OLD.venue_id AND day = {old_day} AND scans <= 0;"
        " RETURN NEW; END $$")
    # No WHEN on the update triggers: an UPDATE that moves a row to another partition
    # fires the BEFORE UPDATE and then AFTER INSERT (not AFTER UPDATE), so a WHEN
    # comparing days would skip the take-away of a row that changes month but not local
    # day (00:00 UTC on the 1st is 07:00 in Vietnam) while AFTER INSERT still adds it.
    db.execute("CREATE TRIGGER dashboard_checkin_insert AFTER INSERT ON checkins"
               " FOR EACH ROW EXECUTE FUNCTION dashboard_count_new()")
    db.execute("CREATE TRIGGER dashboard_checkin_leave BEFORE UPDATE OF wall_ms, venue_id ON checkins"
               " FOR EACH ROW EXECUTE FUNCTION dashboard_count_old()")
    db.execute("CREATE TRIGGER dashboard_checkin_update AFTER UPDATE OF wall_ms, venue_id ON checkins"
               " FOR EACH ROW EXECUTE FUNCTION dashboard_count_new()")


def _floor_day(ms: int) -> int:
    return ms // DAY_MS  # Python's // floors, like _day_sql


def day_number(day: dt.date) -> int:
    """The roll-up's number for a local day (days since 1970-01-01)."""
    return day.toordinal() - EPOCH_ORDINAL


def day_of_number(number: int) -> dt.date:
    return dt.date.fromordinal(number + EPOCH_ORDINAL)
