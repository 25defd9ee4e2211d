"""Autobahn|Testsuite: find Python 2.7, install the suite once per machine, run its fuzzing client.

The suite (0.8.2, the last release) is Python 2 software. It is installed with
pip's `--target` into a cache directory shared by every checkout on the
machine (~/.cache/sensorstream/autobahn, or $SENSORSTREAM_AUTOBAHN_CACHE), and
loaded with `site.addsitedir` so that its namespace packages (zope) import.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path

VERSION = "0.8.2"
PYTHON2_VERSION = "2.7.18"

# Run by Python 2: the suite's `wstest` entry point, after adding its install
# directory. The warnings are Python 2 deprecation notices from its dependencies.
_BOOT = """
import site, sys, warnings
warnings.simplefilter('ignore')
site.addsitedir(sys.argv[1])
spec = sys.argv[2]
sys.argv = ['wstest', '-m', 'fuzzingclient', '-s', spec]
from autobahntestsuite.wstest import run
run()
"""


class SuiteUnavailable(Exception):
    """Python 2.7 or the suite cannot be had on this machine; the message says how to fix it."""


def cache_root() -> Path:
    explicit = os.environ.get("SENSORSTREAM_AUTOBAHN_CACHE")
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "sensorstream" / "autobahn"


def _is_python27(exe: str) -> bool:
    try:
        r = subprocess.run([exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and r.stdout.strip() == "2.7"


def find_python2() -> str:
    """Path of a Python 2.7 interpreter: $SENSORSTREAM_PYTHON2, pyenv's 2.7.18, or python2.7 on PATH."""
    candidates = []
    if os.environ.get("SENSORSTREAM_PYTHON2"):
        candidates.append(os.environ["SENSORSTREAM_PYTHON2"])
    if shutil.which("pyenv"):
        r = subprocess.run(["pyenv", "prefix", PYTHON2_VERSION], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip():
            candidates.append(str(Path(r.stdout.strip()) / "bin" / "python"))
    for name in ("python2.7", "python2"):
        if shutil.which(name):
            candidates.append(shutil.which(name))
    for exe in candidates:
        if _is_python27(exe):
            return exe
    raise SuiteUnavailable(
        "Autobahn|Testsuite needs Python 2.7, and none was found.\n"
        f"fix: `pyenv install {PYTHON2_VERSION}`, or point SENSORSTREAM_PYTHON2 at a python2.7 binary.")


def ensure_installed(python2: str, root: Path | None = None, *, log=print) -> Path:
    """The suite's install directory, installing it first if this machine has none yet.

    A finished install is marked by a file written last; installs go to a
    temporary directory renamed into place, under a lock, so a run cut short
    or two runs at once never leave a half install that looks complete."""
    root = root or cache_root()
    site = root / f"site-{VERSION}"
    done = site / ".installed"
    if done.exists():
        return site
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return site
        tmp = root / f"site-{VERSION}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"conformance: installing autobahntestsuite=={VERSION} into {site} (once per machine, about a minute)")
        r = subprocess.run([python2, "-m", "pip", "install", "--disable-pip-version-check", "--no-warn-script-location",
                            "--target", str(tmp), f"autobahntestsuite=={VERSION}"], capture_output=True, text=True)
        if r.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-5:])
            raise SuiteUnavailable(f"installing autobahntestsuite=={VERSION} failed:\n{tail}\n"
                                   "fix: check that PyPI is reachable from this machine, then run again.")
        (tmp / ".installed").write_text(f"autobahntestsuite=={VERSION}\n")
        shutil.rmtree(site, ignore_errors=True)
        tmp.rename(site)
    return site


def run_fuzzing_client(python2: str, site: Path, spec: dict, workdir: Path, *, timeout: float, log_file: Path) -> dict:
    """Run the fuzzing client on `spec` (its `outdir` is set here); returns the report's index.json."""
    outdir = workdir / "reports"
    shutil.rmtree(outdir, ignore_errors=True)
    spec = {**spec, "outdir": str(outdir)}
    spec_path = workdir / "fuzzingclient.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    with open(log_file, "wb") as out:
        # cwd: the suite writes nothing else, but keep whatever it might next to its report.
        subprocess.run([python2, "-c", _BOOT, str(site), str(spec_path)], cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                       timeout=timeout, check=False)
    index = outdir / "index.json"
    if not index.exists():
        raise RuntimeError(f"the fuzzing client wrote no report (see {log_file})")
    return json.loads(index.read_text())
