"""The server's storage: the port every feature stores through, and its two engines.

- ``port.py``: the ``Storage`` protocol the bridge and the web use, the values it hands
  back (``StationInfo``, ``StoreResult``) and the ingest window both engines enforce.
- ``sqlite.py``: ``SqliteStorage``, everything in one SQLite file (the default).
- ``postgres.py``: ``PostgresStorage`` and ``open_configured`` / ``open_storage_url``,
  which pick the engine from server.toml (docs/postgresql.md); ``postgres_schema.py``:
  its migrations and monthly partitions. Imported by name where needed, since psycopg
  is an optional extra.
- ``sql.py``: the SQL port (``Database``) through which every feature module reaches its
  own tables, ``storage.sql``, on either engine.

This package imports nothing from the rest of the server but server.config; features
import it, never the other way round (tests/test_layout.py checks it).
"""

from server.storage.port import IngestWindow, StationInfo, Storage, StoreResult
from server.storage.sqlite import SqliteStorage

__all__ = ["IngestWindow", "SqliteStorage", "StationInfo", "Storage", "StoreResult"]
