"""The generated IANA registry: it is what the generator makes of the kept CSV columns."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from relay.flows import registry
from relay.flows.registry_gen import elements, module_source

ROOT = Path(__file__).resolve().parents[2]
CSV = Path(__file__).parent / "data" / "iana-ie-columns.csv"
TYPES = {
    "unsigned8", "unsigned16", "unsigned32", "unsigned64", "unsigned256", "signed32",
    "float64", "boolean", "macAddress", "octetArray", "string", "dateTimeSeconds",
    "dateTimeMilliseconds", "dateTimeMicroseconds", "dateTimeNanoseconds", "ipv4Address",
    "ipv6Address", "basicList", "subTemplateList", "subTemplateMultiList",
}  # fmt: skip


def test_the_committed_registry_is_what_the_generator_makes_of_the_csv() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "relay.flows.registry_gen", str(CSV), "--source", registry.SOURCE],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert result.stdout == (ROOT / "relay" / "flows" / "registry.py").read_text()


def test_the_registry_records_its_revision_and_source() -> None:
    assert registry.REVISION == "2024-10-23"
    assert "3b24144e9fbf0e1230ca0a7c3045f598880d0a70" in registry.SOURCE


@pytest.mark.parametrize(
    ("element", "name", "datatype"),
    [
        (1, "octetDeltaCount", "unsigned64"),
        (8, "sourceIPv4Address", "ipv4Address"),
        (27, "sourceIPv6Address", "ipv6Address"),
        (34, "samplingInterval", "unsigned32"),
        (56, "sourceMacAddress", "macAddress"),
        (82, "interfaceName", "string"),
        (152, "flowStartMilliseconds", "dateTimeMilliseconds"),
        (156, "flowStartNanoseconds", "dateTimeNanoseconds"),
        (276, "dataRecordsReliability", "boolean"),
        (291, "basicList", "basicList"),
        (311, "samplingProbability", "float64"),
        (434, "mibObjectValueInteger", "signed32"),
        (529, "udpUnsafeExIDList", "basicList"),
    ],
)
def test_elements_have_their_iana_name_and_type(element: int, name: str, datatype: str) -> None:
    assert registry.ELEMENTS[element] == (name, datatype)


@pytest.mark.parametrize("element", [0, 65, 69, 97, 105, 127, 416, 419, 530, 32767])
def test_reserved_unassigned_and_unnamed_numbers_are_not_elements(element: int) -> None:
    assert element not in registry.ELEMENTS


def test_every_element_has_a_known_abstract_data_type() -> None:
    assert {datatype for _, datatype in registry.ELEMENTS.values()} <= TYPES


def test_the_generator_reads_the_older_data_type_column_and_skips_ranges() -> None:
    rows = [
        {"ElementID": "1", "Name": "octetDeltaCount", "Data Type": "unsigned64", "Date": "x1"},
        {"ElementID": "34-35", "Name": "Assigned for NetFlow v9 compatibility", "Date": ""},
        {"ElementID": "2", "Name": "", "Data Type": "", "Date": "x2"},
    ]
    found, newest = elements(rows)
    assert found == [(1, "octetDeltaCount", "unsigned64")]
    assert newest == "x2"
    assert '    1: ("octetDeltaCount", "unsigned64"),' in module_source(found, newest, "here")


def test_the_kept_csv_lists_every_row_once_in_order() -> None:
    with CSV.open(newline="") as handle:
        numbers = [int(r["ElementID"]) for r in csv.DictReader(handle) if r["ElementID"].isdigit()]
    assert numbers == sorted(set(numbers))
