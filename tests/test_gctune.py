"""server/gctune.py, in a child process (it changes the collector for the whole process)."""

import subprocess
import sys


def test_tune_freezes_start_up_and_makes_full_collections_rarer():
    code = (
        "import gc, json, sensorstream.server.app\n"
        "from sensorstream.server import gctune\n"
        "before = gc.get_threshold()\n"
        "gctune.tune()\n"
        "print(json.dumps([before, gc.get_threshold(), gc.get_freeze_count(), list(gctune.THRESHOLDS)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    import json

    before, after, frozen, wanted = json.loads(out)
    assert before == [700, 10, 10]  # CPython's defaults, which this changes
    assert after == wanted
    # Young and full collections rarer; the middle generation's ratio kept.
    assert after[0] > before[0] and after[1] == before[1] and after[2] > before[2]
    assert frozen > 10_000  # the imported modules' objects: never scanned again

