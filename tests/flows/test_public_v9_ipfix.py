"""Public NetFlow v9 / IPFIX captures from other projects, against reference decodes.

The files live beside the project in ``../shared/netflow-samples/v9-ipfix`` (they belong to
their projects and are never copied here; SOURCES.md there says where each came from), so
every test here skips when they are absent. Each session's datagrams are fed in order as one
exporter's, templates learned from earlier datagrams into a plain dict (the real template
cache is not this module's), and each record is checked field by field, by element, against
the reference decode (tshark's cflow dissector, normalised by IANA type).

Where this decoder and the reference part ways, on purpose, the test says so:
- ``logstash-0length-fields``: its templates have fields of length 0, "a field of impossible
  length" SPEC drops with the template; the reference marks those records optional.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from relay.flows import messages
from relay.flows.layout import Kind
from relay.flows.records import decode_records, plan_for
from relay.flows.template import FieldSpec, Template
from relay.render.generic import iso_utc


def _samples() -> Path | None:
    # ../shared relative to the repository; a worktree under wt/ has it one level further up.
    for parent in Path(__file__).resolve().parents[2:5]:
        candidate = parent / ".." / "shared" / "netflow-samples" / "v9-ipfix"
        if candidate.is_dir():
            return candidate
    return None


SAMPLES = _samples()
SESSIONS: dict[str, list[Path]] = defaultdict(list)
for _path in sorted(SAMPLES.glob("*.bin")) if SAMPLES else []:
    SESSIONS[re.sub(r"-\d{3}$", "", _path.stem)].append(_path)

pytestmark = pytest.mark.skipif(not SESSIONS, reason="no v9/IPFIX samples in ../shared")

# Sessions whose templates this decoder refuses where the reference decodes them anyway.
REFUSED_TEMPLATES = {"logstash-0length-fields": "field_length"}
_TIMES = {Kind.DATETIME_S, Kind.DATETIME_MS, Kind.DATETIME_US, Kind.DATETIME_NS}


def element_id(spec: FieldSpec) -> str:
    return f"{spec.enterprise}.{spec.element}" if spec.enterprise else str(spec.element)


def reference_key(template: Template, index: int, version: int) -> str:
    spec = template.fields[index]
    if version == 9 and index < template.scope_fields:
        return f"scope{spec.element}"
    return element_id(spec)


def by_element(template: Template, version: int, values: tuple[Any, ...]) -> dict[str, Any]:
    """A decoded record as the reference writes it: first value per element, times in ISO."""
    plan = plan_for(template, version)
    out: dict[str, Any] = {}
    for i, (kind, value) in enumerate(zip(plan.kinds, values, strict=True)):
        out.setdefault(reference_key(template, i, version), iso_utc(value) if kind in _TIMES
                       else value)  # fmt: skip
    return out


@pytest.mark.parametrize("session", sorted(SESSIONS))
def test_a_public_session_decodes_as_its_reference_does(session: str) -> None:
    known: dict[tuple[int, int], Template] = {}
    for path in SESSIONS[session]:
        ref = json.loads(path.with_suffix(".json").read_text())
        message = messages.parse(path.read_bytes())
        header, version = message.header, message.header.version
        expected_header = ref["header"]
        assert header.version == expected_header["version"]
        assert header.flow_sequence == expected_header["sequence"]
        assert header.unix_secs == expected_header["export_time"]
        assert header.domain == expected_header.get(
            "source_id", expected_header.get("observation_domain_id")
        )
        if version == 9:
            assert header.sys_uptime == expected_header["sys_uptime"]

        refused = REFUSED_TEMPLATES.get(session)
        expected_templates = [
            (t["template_id"], t["kind"] == "options", t["scope_count"],
             [tuple(f) for f in t["fields"]])
            for t in ref["templates"]
        ]  # fmt: skip
        got_templates = [
            (t.template_id, t.options, t.scope_fields,
             [(element_id(f), f.length) for f in t.fields])
            for t in message.templates
        ]  # fmt: skip
        if refused:
            assert got_templates == []
            assert {p.reason for p in message.problems} == {refused}
            continue
        assert got_templates == expected_templates, path.name
        for template in message.templates:
            known[(header.domain, template.template_id)] = template

        got_records = []
        no_template = set()
        problems = [p.reason for p in message.problems]
        for data_set in message.data_sets:
            used = known.get((header.domain, data_set.template_id))
            if used is None:
                no_template.add(data_set.template_id)
                continue
            records, set_problems = decode_records(
                plan_for(used, version), data_set.data, part=data_set.part
            )
            problems += [p.reason for p in set_problems]
            got_records += [
                (data_set.template_id, used.options, by_element(used, version, r)) for r in records
            ]
        expected_records = [
            (r["set_template_id"], r["kind"] == "options", r["fields"]) for r in ref["records"]
        ]
        assert len(got_records) == len(expected_records), path.name
        for got, expected in zip(got_records, expected_records, strict=True):
            assert got == expected, path.name

        expected_problems = [p["reason"] for p in ref["problems"] if p["reason"] != "no_template"]
        assert problems == expected_problems, path.name
        held = {int(p["where"].split()[-1]) for p in ref["problems"]
                if p["reason"] == "no_template"}  # fmt: skip
        assert no_template == held, path.name


def test_the_public_sessions_are_all_here() -> None:
    assert len(SESSIONS) == 18
