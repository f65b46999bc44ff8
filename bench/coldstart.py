#!/usr/bin/env python3
"""Cold start: spawn `openchami serve`, poll a readiness URL until it answers
200, print the milliseconds from spawn to that answer and the CPU milliseconds
the server used until then, then stop the server.

usage: coldstart.py URL LOG -- COMMAND...

The poll loop retries after 0.5 ms on a refused connection and after 1 ms on
any other failure; the TLS certificate is not verified (the CA is created by the
very start being measured, and all traffic is on loopback). Exits non-zero if
the server dies or is not ready within $COLDSTART_TIMEOUT seconds (default 30).
"""

import http.client
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.parse


def cpu_ms(pid: int) -> float:
    """User + system CPU the process (all threads) has used, in ms."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000.0 / os.sysconf("SC_CLK_TCK")


def main() -> int:
    if len(sys.argv) < 5 or sys.argv[3] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    url = urllib.parse.urlsplit(sys.argv[1])
    log_path = sys.argv[2]
    cmd = sys.argv[4:]
    timeout = float(os.environ.get("COLDSTART_TIMEOUT", "30"))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    host, port = url.hostname, url.port or 443
    path = url.path or "/"

    with open(log_path, "ab") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        try:
            while True:
                if proc.poll() is not None:
                    print(f"coldstart: server exited with {proc.returncode}; see {log_path}",
                          file=sys.stderr)
                    return 1
                if time.monotonic() - t0 > timeout:
                    print(f"coldstart: not ready after {timeout:.0f}s", file=sys.stderr)
                    return 1
                conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=5)
                try:
                    conn.request("GET", path)
                    status = conn.getresponse().status
                    if status == 200:
                        elapsed = (time.monotonic() - t0) * 1000.0
                        print(f"{elapsed:.1f} {cpu_ms(proc.pid):.0f}")
                        return 0
                    time.sleep(0.001)
                except ConnectionRefusedError:
                    # Not listening yet; a short nap keeps the poller from
                    # taking a CPU away from the server on a small machine.
                    time.sleep(0.0005)
                except (OSError, http.client.HTTPException):
                    time.sleep(0.001)
                finally:
                    conn.close()
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


if __name__ == "__main__":
    sys.exit(main())
