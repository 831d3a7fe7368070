"""Running the cloud call drivers (tests/aws_call.c, tests/az_call.c) for test_kms_call.py and
test_akv_call.py: a clean environment (no proxy variables, no CTOK_DEBUG unless asked), the
elapsed time, and the summary line they print."""
import os
import subprocess
import time

PROXY_VARS = ("http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy",
              "NO_PROXY")


def run_driver(argv, env=None, timeout=120):
    """The driver's CompletedProcess, with .elapsed (seconds)."""
    e = {k: v for k, v in os.environ.items() if k not in PROXY_VARS and k != "CTOK_DEBUG"}
    e.update(env or {})
    t0 = time.monotonic()
    p = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout,
                       env=e)
    p.elapsed = time.monotonic() - t0
    return p


def stats(p):
    """{"calls", "ok", "failed", "ms"} from the driver's summary line."""
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("calls=")][-1]
    return {k: int(v) for k, v in (f.split("=") for f in line.split())}


def quiet(emu):
    """No faults and zero counters: each test starts from here."""
    for fault in (emu.throttle, emu.fail5xx, emu.reset_connections, emu.latency):
        fault(0)
    emu.clear_counters()
