"""Administrative areas (province, optional district, ward) loaded from a data file.

The hierarchy is data, not code: a deployment that still has districts lists wards
under them, one that does not lists wards directly under the province.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from qrgate.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_AREAS_FILE = Path(__file__).with_name("areas_vn.json")


@dataclass(frozen=True, slots=True)
class Area:
    code: str
    name: str
    parent: str  # the code of the province or district it belongs to ("" for provinces)


class AreaDirectory:
    """Look-ups over one areas file: the form's choices and validation of codes."""

    def __init__(self, provinces: dict[str, Area], districts: dict[str, Area], wards: dict[str, Area]):
        self.provinces = provinces
        self.districts = districts
        self.wards = wards

    @classmethod
    def load(cls, path: str | Path = DEFAULT_AREAS_FILE) -> AreaDirectory:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            provinces, districts, wards = {}, {}, {}
            for p in data["provinces"]:
                provinces[str(p["code"])] = Area(str(p["code"]), str(p["name"]), "")
                for w in p.get("wards", []):
                    wards[str(w["code"])] = Area(str(w["code"]), str(w["name"]), str(p["code"]))
                for d in p.get("districts", []):
                    districts[str(d["code"])] = Area(str(d["code"]), str(d["name"]), str(p["code"]))
                    for w in d.get("wards", []):
                        wards[str(w["code"])] = Area(str(w["code"]), str(w["name"]), str(d["code"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"areas file {path}: {exc}") from None
        logger.debug("loaded %d provinces, %d districts, %d wards from %s", len(provinces), len(districts),
                     len(wards), path)
        return cls(provinces, districts, wards)

    def districts_of(self, province: str) -> list[Area]:
        return [d for d in self.districts.values() if d.parent == province]

    def wards_of(self, parent: str) -> list[Area]:
        return [w for w in self.wards.values() if w.parent == parent]

    def check(self, province: str, district: str, ward: str) -> list[tuple[str, str]]:
        """Problems with a (province, district, ward) choice as (field, Vietnamese message)."""
        problems = []
        if province not in self.provinces:
            return [("province", "Hãy chọn tỉnh/thành phố trong danh sách.")]
        has_districts = bool(self.districts_of(province))
        if has_districts:
            if district not in self.districts or self.districts[district].parent != province:
                return [("district", "Hãy chọn quận/huyện thuộc tỉnh/thành phố đã chọn.")]
        elif district:
            problems.append(("district", "Tỉnh/thành phố này không chia quận/huyện."))
        parent = district if has_districts else province
        if ward not in self.wards or self.wards[ward].parent != parent:
            problems.append(("ward", "Hãy chọn phường/xã thuộc khu vực đã chọn."))
        return problems

    def describe(self, province: str, district: str, ward: str) -> str:
        """``Phường Bến Nghé, Quận 1, Thành phố Hồ Chí Minh`` (unknown codes are skipped)."""
        names = [table[code].name for table, code in ((self.wards, ward), (self.districts, district),
                                                       (self.provinces, province)) if code in table]
        return ", ".join(names)

    def as_tree(self) -> list[dict]:
        """Everything, nested, for the form's script and the API."""
        def wards(parent):
            return [{"code": w.code, "name": w.name} for w in self.wards_of(parent)]
        return [
            {"code": p.code, "name": p.name, "wards": wards(p.code),
             "districts": [{"code": d.code, "name": d.name, "wards": wards(d.code)} for d in self.districts_of(p.code)]}
            for p in self.provinces.values()
        ]
