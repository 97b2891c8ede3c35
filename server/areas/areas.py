"""Vietnam's administrative areas: the map in force since 1 July 2025 (34 provinces and
3,321 communes and wards directly under them, no district level), read from the
``vietnam-provinces`` package, and the older three-level codes as a legacy table.

The current map is the package's data (the General Statistics Office's list; upgrading
the package brings a newer one). Codes are written as the Office writes them: two
digits for a province, five for a commune or ward. The legacy table (province, district,
ward) is what the server offered before the 2025 map; it is kept only so that a venue or
a health officer still holding such a code reads as words and can be converted
(server/areas/migrate.py, ``qrgate-server areas-migrate``). An old code and a new one can
be the same digits with another meaning (``24`` was Bắc Giang and is now Bắc Ninh), so
which map a stored code belongs to is recorded beside it (``LEGACY`` / ``CURRENT``).
"""

from __future__ import annotations

import json
import logging
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from qrgate.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_LEGACY_FILE = Path(__file__).with_name("legacy_areas.json")
CURRENT = "vn2025"  # the map of 1 July 2025, as stored in venues.area_map / area_officers.area_map
LEGACY = "legacy"   # a code from the older three-level table


@dataclass(frozen=True, slots=True)
class Area:
    code: str
    name: str
    parent: str  # the code of the province (or, in the legacy table, district) it belongs to; "" for provinces


def _clean(name: str) -> str:
    return " ".join(unicodedata.normalize("NFC", str(name)).split())


def _province_name(raw: dict) -> str:
    """``Cao Bằng`` (type ``tỉnh``) -> ``Tỉnh Cao Bằng``; the cities already say ``Thành phố``."""
    name = _clean(raw["name"])
    if str(raw.get("division_type", "")).startswith("tỉnh") and not name.startswith("Tỉnh "):
        return f"Tỉnh {name}"
    return name


def sort_key(name: str) -> tuple[str, str]:
    """Vietnamese names in the order people look for them: by the name without its
    ``Phường`` / ``Xã`` / ``Đặc khu`` word, diacritics folded (then as written)."""
    bare = name
    for prefix in ("Phường ", "Xã ", "Đặc khu ", "Thị trấn ", "Tỉnh ", "Thành phố "):
        if bare.startswith(prefix):
            bare = bare[len(prefix):]
            break
    folded = unicodedata.normalize("NFD", bare.replace("Đ", "D").replace("đ", "d"))
    return "".join(ch for ch in folded if not unicodedata.combining(ch)).casefold(), name


class LegacyAreas:
    """The older three-level table (province, district, ward), for reading old codes."""

    def __init__(self, provinces: dict[str, Area], districts: dict[str, Area], wards: dict[str, Area]):
        self.provinces = provinces
        self.districts = districts
        self.wards = wards

    @classmethod
    def load(cls, path: str | Path = DEFAULT_LEGACY_FILE) -> LegacyAreas:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            provinces, districts, wards = {}, {}, {}
            for p in data["provinces"]:
                provinces[str(p["code"])] = Area(str(p["code"]), _clean(p["name"]), "")
                for w in p.get("wards", []):
                    wards[str(w["code"])] = Area(str(w["code"]), _clean(w["name"]), str(p["code"]))
                for d in p.get("districts", []):
                    districts[str(d["code"])] = Area(str(d["code"]), _clean(d["name"]), str(p["code"]))
                    for w in d.get("wards", []):
                        wards[str(w["code"])] = Area(str(w["code"]), _clean(w["name"]), str(d["code"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"legacy areas file {path}: {exc}") from None
        return cls(provinces, districts, wards)

    def level_of(self, code: str) -> str | None:
        for level, table in (("province", self.provinces), ("district", self.districts), ("ward", self.wards)):
            if code in table:
                return level
        return None

    def name_of(self, code: str) -> str:
        for table in (self.wards, self.districts, self.provinces):
            if code in table:
                return table[code].name
        return ""

    def describe(self, province: str, district: str, ward: str) -> str:
        """``Phường Bến Nghé, Quận 1, Thành phố Hồ Chí Minh`` (unknown codes are skipped)."""
        names = [table[code].name for table, code in ((self.wards, ward), (self.districts, district),
                                                       (self.provinces, province)) if code in table]
        return ", ".join(names)


class AreaDirectory:
    """The current map (provinces and their communes/wards) and the legacy table:
    the venue form's choices, validation of codes, and areas as words."""

    def __init__(self, provinces: dict[str, Area], wards: dict[str, Area], legacy: LegacyAreas, source: str = ""):
        self.provinces = provinces
        self.wards = wards
        self.legacy = legacy
        self.source = source  # which data the map came from, said in docs and `areas-migrate`
        self._by_province: dict[str, list[Area]] = {code: [] for code in provinces}
        for ward in wards.values():
            self._by_province.setdefault(ward.parent, []).append(ward)
        for children in self._by_province.values():
            children.sort(key=lambda a: sort_key(a.name))

    @classmethod
    def load(cls, legacy_path: str | Path | None = None) -> AreaDirectory:
        """The map from the vietnam-provinces package; ``legacy_path`` is the old
        three-level file an installation used (None: the bundled legacy sample)."""
        import vietnam_provinces

        try:
            data = json.loads(vietnam_provinces.NESTED_DIVISIONS_JSON_PATH.read_text(encoding="utf-8"))
            provinces, wards = {}, {}
            for p in data:
                code = f"{int(p['code']):02d}"
                provinces[code] = Area(code, _province_name(p), "")
                for w in p["wards"]:
                    ward = f"{int(w['code']):05d}"
                    wards[ward] = Area(ward, _clean(w["name"]), code)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"the map of vietnam-provinces {vietnam_provinces.__version__}: {exc}") from None
        legacy = LegacyAreas.load(legacy_path if legacy_path is not None else DEFAULT_LEGACY_FILE)
        source = f"vietnam-provinces {vietnam_provinces.__version__} (data of {vietnam_provinces.__data_version__})"
        logger.debug("loaded %d provinces and %d communes from %s", len(provinces), len(wards), source)
        return cls(provinces, wards, legacy, source)

    def wards_of(self, province: str) -> list[Area]:
        """The communes and wards of a province, by name."""
        return list(self._by_province.get(province, ()))

    def level_of(self, code: str) -> str | None:
        """``province`` or ``ward`` on the current map; None for any other code."""
        if code in self.provinces:
            return "province"
        if code in self.wards:
            return "ward"
        return None

    def name_of(self, code: str) -> str:
        """The name of a province or commune/ward on the current map ("" for any other code)."""
        area = self.provinces.get(code) or self.wards.get(code)
        return area.name if area else ""

    def check(self, province: str, ward: str) -> list[tuple[str, str]]:
        """Problems with a (province, commune/ward) choice as (field, Vietnamese message)."""
        if province not in self.provinces:
            return [("province", "Hãy chọn tỉnh/thành phố trong danh sách.")]
        if ward not in self.wards or self.wards[ward].parent != province:
            return [("ward", "Hãy chọn xã/phường thuộc tỉnh/thành phố đã chọn.")]
        return []

    def describe(self, province: str, ward: str) -> str:
        """``Phường Bến Thành, Thành phố Hồ Chí Minh`` (unknown codes are skipped)."""
        return ", ".join(table[code].name for table, code in ((self.wards, ward), (self.provinces, province))
                         if code in table)

    def describe_venue(self, venue) -> str:
        """A venue's area as words, on the map its codes belong to (``venue.area_map``)."""
        if getattr(venue, "area_map", CURRENT) == LEGACY:
            return self.legacy.describe(venue.province, venue.district, venue.ward)
        return self.describe(venue.province, venue.ward)

    def as_tree(self) -> list[dict]:
        """Every province with its communes and wards, for the API."""
        return [{"code": p.code, "name": p.name, "wards": self.wards_json(p.code)} for p in self.provinces.values()]

    def wards_json(self, province: str) -> list[dict]:
        return [{"code": w.code, "name": w.name} for w in self.wards_of(province)]


def mark_legacy(db, table: str, which: str) -> None:
    """Upgrading from before the 2025 map: add ``area_map`` to ``table`` and mark the rows
    that exist (``which``: an SQL condition) as holding old codes, in one transaction, so
    that of several processes starting together only the one that adds the column marks."""
    with db.transaction(serial=f"schema:{table}"):
        if "area_map" in db.columns(table):
            return
        db.execute(f"ALTER TABLE {table} ADD COLUMN area_map TEXT")
        db.execute(f"UPDATE {table} SET area_map = ? WHERE {which}", [LEGACY])
