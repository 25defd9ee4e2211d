"""Run Autobahn|Testsuite's fuzzing client against sensorstream and its peers, in one run.

    python -m tests.conformance.run                      # sensorstream, websockets, trio-websocket
    python -m tests.conformance.run --agents sensorstream --check   # what .ci/run does
    python -m tests.conformance.run --publish            # also rewrite docs/conformance.md's table and summary

Exit codes: 0 every sensorstream case conforms (and the /ws checks pass),
1 something does not (listed), 2 the suite cannot run here (the message says
how to fix it). The HTML report goes to build/conformance/reports/ (not in
git); --publish writes docs/conformance.json (in git).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import report, suite
from .checks import ws_checks
from .echo_server import DEFAULT_MAX_MESSAGE
from .procs import ROOT, Child, python_module

AGENTS = {
    "sensorstream": ("tests.conformance.echo_server", "/ws"),
    "websockets": ("tests.conformance.peers", "/"),
    "trio-websocket": ("tests.conformance.peers", "/"),
}

#: Sections 1-7 and 10 in full; 9.1-9.4 (big messages, whole and fragmented);
#: 12-13 (permessage-deflate): nobody here negotiates it, so they report as
#: UNIMPLEMENTED, quickly. 9.5-9.8 measure throughput, not conformance.
CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.1.*", "9.2.*", "9.3.*", "9.4.*", "10.*", "12.*", "13.*"]
EXCLUDE: list[str] = []

DOC = ROOT / "docs" / "conformance.md"
SUMMARY = ROOT / "docs" / "conformance.json"
BEGIN, END = "<!-- conformance-table:begin -->", "<!-- conformance-table:end -->"


def start(agent: str, workdir: Path, max_message: int) -> Child:
    module, _ = AGENTS[agent]
    args = ["--port", "0", "--max-message-bytes", str(max_message)]
    if module.endswith("peers"):
        args = [agent, *args]
    return Child(agent, python_module(module, *args), workdir / f"{agent}.log")


def spec_for(ports: dict[str, int], cases: list[str], exclude: list[str]) -> dict:
    return {
        "servers": [{"agent": a, "url": f"ws://127.0.0.1:{p}{AGENTS[a][1]}"} for a, p in ports.items()],
        "cases": cases,
        "exclude-cases": exclude,
        "exclude-agent-cases": {},
    }


def publish(summary: dict, meta: dict, agents: list[str]) -> None:
    # Per agent: the section counts and every case that is not plain OK (the
    # full per-case report is the HTML one, which stays out of git).
    agents_out = {a: {"sections": s["sections"], "failed": s["failed"],
                      "not_ok": {c: o for c, o in s["cases"].items() if o != "OK"}, "cases": len(s["cases"])}
                  for a, s in summary.items()}
    SUMMARY.write_text(json.dumps({"meta": meta, "agents": agents_out}, indent=1) + "\n")
    text = DOC.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    when = f"Run of {meta['date']} (autobahntestsuite {suite.VERSION}): {meta['duration_s']:.0f} s for the {len(agents)} servers on a shared 2-core VM."
    DOC.write_text(f"{head}{BEGIN}\n{when}\n\n{report.table(summary, agents)}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.conformance.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", default=",".join(AGENTS), help="comma-separated, of: " + ", ".join(AGENTS))
    ap.add_argument("--cases", default=",".join(CASES), help="Autobahn case patterns (default: %(default)s)")
    ap.add_argument("--exclude", default=",".join(EXCLUDE), help="case patterns to leave out")
    ap.add_argument("--workdir", type=Path, default=ROOT / "build" / "conformance", help="logs and the HTML report")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds the fuzzing client may take")
    ap.add_argument("--max-message-bytes", type=int, default=DEFAULT_MAX_MESSAGE,
                    help="every server's message limit (default %(default)s; 9.x needs 16 MiB)")
    ap.add_argument("--check", action="store_true", help="exit 1 unless every sensorstream case conforms")
    ap.add_argument("--publish", action="store_true", help="write docs/conformance.json and the table in docs/conformance.md")
    ap.add_argument("--no-ws-checks", action="store_true", help="skip the /ws checks (1009, binary message error)")
    args = ap.parse_args(argv)
    agents = [a.strip() for a in args.agents.split(",") if a.strip()]
    unknown = [a for a in agents if a not in AGENTS]
    if unknown:
        print(f"conformance: unknown agent {', '.join(unknown)}; choose from {', '.join(AGENTS)}", file=sys.stderr)
        return 2
    try:
        python2 = suite.find_python2()
        site = suite.ensure_installed(python2)
    except suite.SuiteUnavailable as e:
        print(f"conformance: {e}", file=sys.stderr)
        return 2

    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    if not args.no_ws_checks:
        problems += ws_checks(workdir)
        for p in problems:
            print(f"conformance: /ws check failed: {p}", file=sys.stderr)

    t0 = time.monotonic()
    children: list[Child] = []
    try:
        for a in agents:
            children.append(start(a, workdir, args.max_message_bytes))
        spec = spec_for({c.name: c.port for c in children}, args.cases.split(","), [x for x in args.exclude.split(",") if x])
        index = suite.run_fuzzing_client(python2, site, spec, workdir, timeout=args.timeout, log_file=workdir / "wstest.log")
    finally:
        for c in children:
            if c.proc.poll() is not None:
                msg = f"the {c.name} server exited during the run (code {c.proc.returncode}; see {c.log})"
                print(f"conformance: {msg}", file=sys.stderr)
                if c.name == "sensorstream":
                    problems.append(msg)
            c.stop()
    duration = time.monotonic() - t0
    summary = report.summarize(index)
    print(report.table(summary, agents))
    counts = ", ".join(f"{a} {len(s['cases'])}" for a, s in summary.items())
    print(f"\ncases per agent: {counts}; {duration:.0f} s; "
          f"report: {workdir / 'reports' / 'index.html'}")
    ours = summary.get("sensorstream")
    if ours is not None:
        for cid in ours["failed"]:
            problems.append(f"case {cid}: {ours['cases'][cid]}")
            print(f"conformance: sensorstream case {cid} is {ours['cases'][cid]} "
                  f"(see {workdir / 'reports'})", file=sys.stderr)
    if args.publish:
        meta = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "duration_s": round(duration, 1),
                "suite": f"autobahntestsuite {suite.VERSION}", "cases": args.cases.split(","),
                "exclude": [x for x in args.exclude.split(",") if x]}
        publish(summary, meta, agents)
    if args.check and problems:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
