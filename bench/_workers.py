"""Long-lived timing workers, one process per library.

PyTorch bundles its own OpenMP runtime and numpy's OpenBLAS its own thread
pool; after a call, each runtime's idle threads spin for a while before they
sleep.  In one process with appealnet's OpenMP threads that puts 4 busy
threads on 2 cores, and whoever runs next loses whole scheduler slices at its
barriers (measured: 20x slowdowns at 2 threads).  So every library runs in its
own worker process, and the parent asks them in turn: only one works at a
time, and the comparison stays interleaved in time.

Protocol: the parent writes one JSON request per line to the worker's stdin;
the worker answers one JSON line on stdout.  The parent imports neither
library (and never forks after OpenMP has run).
"""
import json
import os
import subprocess
import sys


class Worker:
    def __init__(self, script, args, env=None):
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(script)] + list(args),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=env, text=True, bufsize=1)
        self.hello = json.loads(self.proc.stdout.readline())

    def call(self, request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("benchmark worker died (see its stderr above)")
        return json.loads(line)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def serve(hello, handle):
    """Worker side: announce `hello`, then answer requests until stdin closes."""
    out = sys.stdout
    sys.stdout = sys.stderr  # stray prints must not break the protocol
    out.write(json.dumps(hello) + "\n")
    out.flush()
    for line in sys.stdin:
        if line.strip():
            out.write(json.dumps(handle(json.loads(line))) + "\n")
            out.flush()


# After a call, OpenBLAS's threads spin for up to ~0.1 s (2^28 cycles) and
# PyTorch's OpenMP threads for milliseconds, in THEIR process: the worker
# asked next would share the cores with them.  appealnet's threads spin
# only briefly (GOMP_SPINCOUNT=10000), so without a pause the comparison was
# biased against whichever side ran after a peer.
SETTLE_SECONDS = 0.25


def settle(threads):
    """Lets the previous worker's idle threads stop spinning (threads > 1)."""
    if threads > 1:
        import time
        time.sleep(SETTLE_SECONDS)
