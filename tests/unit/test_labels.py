"""The labels (service/domain/labels.py): one for every name, and the README's
PIN table says the same Japanese names."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from pinlife.domain import labels
from pinlife.domain.pins import PinType

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_pin_table_names_each_pin_type_as_the_labels_do():
    rows = re.findall(r"^\| (.+?) \(`([A-Z_]+)`\) \|", (ROOT / "README.md").read_text(encoding="utf-8"), re.MULTILINE)
    assert len(rows) == len(PinType)
    for text, name in rows:
        english, japanese = labels.PIN_TYPES[PinType[name]]
        assert text == f"{english} {japanese}", (text, name)


def test_names_in_both_languages_and_unknown_names_as_they_are():
    assert labels.pin_type("signature", "ja") == "署名用電子証明書"
    assert labels.event_type("PinLocked") == "PIN locked" and labels.event_type("PinLocked", "ja") == "暗証番号ロック"
    assert labels.outcome("refused", "ja") == "拒否" and labels.channel("medical_reader") == "medical-institution reader"
    assert labels.event_type("SomethingNewer", "ja") == "SomethingNewer"


def test_the_vendored_browser_libraries_are_the_ones_recorded():
    """service/console/static/vendor/ holds what tools/console/vendor.py copied from the
    npm packages tools/console/package.json pins: versions and checksums as recorded."""
    vendor = ROOT / "service" / "console" / "static" / "vendor"
    record = json.loads((vendor / "vendor.json").read_text())
    pinned = json.loads((ROOT / "tools" / "console" / "package.json").read_text())["dependencies"]
    assert {e["package"]: e["version"] for e in record if e["package"] in pinned} == pinned
    for entry in record:
        assert (vendor / entry["license_file"]).is_file()
        if "file" in entry:
            assert hashlib.sha256((vendor / entry["file"]).read_bytes()).hexdigest() == entry["sha256"], entry["file"]
