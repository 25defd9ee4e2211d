"""Autobahn's index.json -> a summary per agent and section, and its Markdown table.

Pure functions (JSON in, JSON and text out), so the table in
docs/conformance.md and the CI verdict come from the same code the tests check.
"""

from __future__ import annotations

import json
from pathlib import Path

SECTIONS = {
    "1": "Framing",
    "2": "Pings/Pongs",
    "3": "Reserved bits",
    "4": "Opcodes",
    "5": "Fragmentation",
    "6": "UTF-8 handling",
    "7": "Close handling",
    "9": "Limits/performance",
    "10": "Auto-fragmentation",
    "12": "Compression (payloads)",
    "13": "Compression (parameters)",
}

#: The outcomes a conforming implementation may have (Autobahn's own report
#: colours these green). UNIMPLEMENTED is what an implementation without
#: permessage-deflate gets in 12.x/13.x: the suite could not negotiate it.
PASSING = ("OK", "NON-STRICT", "INFORMATIONAL")
OUTCOMES = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")
UNIMPLEMENTED_SECTIONS = ("12", "13")


def case_key(case_id: str) -> tuple[int, ...]:
    return tuple(int(p) for p in case_id.split("."))


def outcome(result: dict) -> str:
    """One word per case: the worse of the message behaviour and the close behaviour."""
    b, c = result["behavior"], result.get("behaviorClose", "OK")
    if "FAILED" in (b, c) or "WRONG CODE" in (b, c):
        return "FAILED"
    if b == "UNIMPLEMENTED":
        return "UNIMPLEMENTED"
    for word in ("NON-STRICT", "INFORMATIONAL"):
        if word in (b, c):
            return word
    return "OK" if b == "OK" else "FAILED"


def summarize(index: dict) -> dict:
    """{agent: {"cases": {id: outcome}, "sections": {section: {outcome: n}}, "failed": [ids], "duration_ms": n}}."""
    out = {}
    for agent, cases in index.items():
        per_case = {cid: outcome(r) for cid, r in sorted(cases.items(), key=lambda kv: case_key(kv[0]))}
        sections: dict[str, dict[str, int]] = {}
        for cid, o in per_case.items():
            s = sections.setdefault(cid.split(".")[0], {})
            s[o] = s.get(o, 0) + 1
        out[agent] = {
            "cases": per_case,
            "sections": dict(sorted(sections.items(), key=lambda kv: int(kv[0]))),
            "failed": [cid for cid, o in per_case.items() if not conforms(cid, o)],
            "duration_ms": sum(r.get("duration", 0) for r in cases.values()),
        }
    return out


def conforms(case_id: str, o: str) -> bool:
    if o in PASSING:
        return True
    return o == "UNIMPLEMENTED" and case_id.split(".")[0] in UNIMPLEMENTED_SECTIONS


def _cell(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    if not total:
        return "–"
    parts = [f"{counts[o]} {o.lower()}" for o in OUTCOMES if counts.get(o) and o != "OK"]
    ok = counts.get("OK", 0)
    head = f"{ok}/{total} ok" if ok else f"0/{total} ok"
    if set(counts) == {"UNIMPLEMENTED"}:
        return f"{total} unimplemented"
    return head + (", " + ", ".join(parts) if parts else "")


def table(summary: dict, agents: list[str]) -> str:
    """Markdown: one row per section, one column per agent."""
    agents = [a for a in agents if a in summary]
    sections = sorted({s for a in agents for s in summary[a]["sections"]}, key=int)
    lines = ["| section | " + " | ".join(agents) + " |", "|---|" + "---|" * len(agents)]
    for s in sections:
        row = [_cell(summary[a]["sections"].get(s, {})) for a in agents]
        lines.append(f"| {s} {SECTIONS.get(s, '')} | " + " | ".join(row) + " |")
    totals = []
    for a in agents:
        n = len(summary[a]["cases"])
        bad = len(summary[a]["failed"])
        totals.append(f"**{n - bad}/{n} conform**" if bad else f"**all {n} conform**")
    lines.append("| all | " + " | ".join(totals) + " |")
    return "\n".join(lines)


def load_index(outdir: Path) -> dict:
    return json.loads((outdir / "index.json").read_text())
