"""What tests/render/golden/ keeps: the generated fast path of every legacy layout, and of
two real templates, in both bodies. regenerate.py writes these; test_golden.py compares.

The templates are written down as the exporters send them (not copied from captures):
softflowd 1.1.0's v9 IPv4 template (``softflowd -v 9``, template 1024), and an IPFIX
template with absolute times, 64-bit counters and applicationName (96) as a variable-length
string, the shape of application-aware exporters' templates.
"""

from __future__ import annotations

from relay.flows import LAYOUTS
from relay.flows.records import plan_for
from relay.flows.template import VARIABLE_LENGTH, FieldSpec, Template
from relay.render.compiled import compile_lines
from relay.render.compiled_template import compile_template
from relay.render.options import BODIES


def _template(template_id: int, fields: tuple[tuple[int, int], ...]) -> Template:
    return Template(
        template_id=template_id, fields=tuple(FieldSpec(element=e, length=n) for e, n in fields)
    )


SOFTFLOWD_V9_IPV4 = _template(
    1024,
    ((8, 4), (12, 4), (22, 4), (21, 4), (1, 4), (2, 4), (10, 4), (14, 4),
     (61, 1), (136, 1), (7, 2), (11, 2), (4, 1), (6, 1), (60, 1), (5, 1)),
)  # fmt: skip
IPFIX_APPLICATION = _template(
    300,
    ((8, 4), (12, 4), (152, 8), (153, 8), (1, 8), (2, 8), (10, 4), (14, 4),
     (7, 2), (11, 2), (4, 1), (6, 1), (5, 1), (96, VARIABLE_LENGTH)),
)  # fmt: skip
# golden file stem -> (template, version)
TEMPLATES = {
    "softflowd-v9-ipv4": (SOFTFLOWD_V9_IPV4, 9),
    "ipfix-application-name": (IPFIX_APPLICATION, 10),
}


def golden_sources() -> dict[str, str]:
    """Every golden file's name and the source it must hold."""
    out = {}
    for body in BODIES:
        for version, fmt in LAYOUTS.items():
            out[f"netflow-v{version}.{body}.py.txt"] = compile_lines(fmt.layout, body).source()
        for stem, (template, version) in TEMPLATES.items():
            plan = plan_for(template, version)
            out[f"{stem}.{body}.py.txt"] = compile_template(plan, body, name=stem).source()
    return out
