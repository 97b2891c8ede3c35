"""Contact tracing on PostgreSQL: ``PostgresTracer``. ``server.checkins.tracing.tracer_for``
picks it for a ``PostgresStorage``, the plain ``Tracer`` for SQLite."""

from __future__ import annotations

from typing import TYPE_CHECKING

from server.checkins.tracing import CONTACT_COLUMNS, Tracer

if TYPE_CHECKING:
    from server.storage.postgres import PostgresStorage


class PostgresTracer(Tracer):
    """Contact tracing on PostgreSQL with the answers of :class:`server.checkins.tracing.Tracer`:
    the same pairing, windows and ranking; only its five queries are written again.
    Every query bounds ``wall_ms`` by constants, so only the months in question are read."""

    def __init__(self, storage: PostgresStorage):
        super().__init__(storage)

    def _rows(self, sql: str, params: list) -> list[tuple]:
        with self.storage.pool.connection() as conn:
            return conn.execute(sql, params).fetchall()

    def _person_scans(self, person_key: str, lo: int, hi: int) -> list[tuple]:
        return self._rows(
            "SELECT person_key, venue_id, direction, wall_ms FROM checkins"
            " WHERE person_key = %s AND wall_ms >= %s AND wall_ms <= %s ORDER BY wall_ms", [person_key, lo, hi])

    def _venue_window(self, venue: int, lo: int, hi: int, person_key: str) -> list[tuple]:
        return self._rows(
            f"SELECT {CONTACT_COLUMNS} FROM checkins WHERE venue_id = %s AND wall_ms >= %s AND wall_ms <= %s"
            " AND person_key <> %s ORDER BY wall_ms, id", [venue, lo, hi, person_key])

    def _last_scans(self, venue: int, lo: int, hi: int, person_key: str) -> list[tuple[str, str, int]]:
        return self._rows(
            "SELECT * FROM (SELECT DISTINCT ON (person_key) person_key, direction, wall_ms FROM checkins"
            " WHERE venue_id = %s AND wall_ms >= %s AND wall_ms < %s AND person_key <> %s"
            " ORDER BY person_key, wall_ms DESC, (direction = 'out') DESC) AS last WHERE direction = 'in'",
            [venue, lo, hi, person_key])

    def _checkin_details(self, ids: list[int]) -> dict[int, tuple[str, str, str, str]]:
        if not ids:
            return {}
        return {r[0]: tuple(r[1:]) for r in self._rows(
            "SELECT id, name, kind, id_number, birth FROM checkins WHERE id = ANY(%s)", [ids])}

    def _nearest_scans(self, keys: list[str], venue: int, bounds: str, params: list[int],
                       pick: str) -> list[tuple]:
        order = "wall_ms DESC, (direction = 'out') DESC" if pick == "max" else "wall_ms, (direction = 'out')"
        return self._rows(
            f"SELECT DISTINCT ON (person_key) {CONTACT_COLUMNS} FROM checkins"
            f" WHERE person_key = ANY(%s) AND venue_id = %s AND {bounds.replace('?', '%s')}"
            f" ORDER BY person_key, {order}", [keys, venue, *params])
