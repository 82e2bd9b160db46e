"""--save for the benchmark scripts: everything the run prints also goes to
bench/results/<script>.txt (or the path given), headed by the command, the
date, the machine and the library versions, and written atomically when the
run ends (a run that fails leaves the previous file in place).  The tables in
bench/README.md are taken from these files."""
import contextlib
import datetime
import io
import os
import platform
import sys

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self):
        for stream in self.streams:
            stream.flush()


def _versions():
    parts = [f"python {platform.python_version()}"]
    for name in ("numpy", "torch", "onnxruntime"):
        try:
            module = __import__(name)
            parts.append(f"{name} {module.__version__}")
        except Exception:  # a peer that is not installed is simply not listed
            pass
    return ", ".join(parts)


def add_argument(parser):
    parser.add_argument("--save", nargs="?", const="", default=None, metavar="PATH",
                        help="also write the output to PATH (default bench/results/<script>.txt)")


def _save_path(argv, script):
    """The --save target in argv, "" for the default, None when absent; worker
    and child processes never save."""
    if "--worker" in argv or "--child" in argv or "--save" not in argv:
        return None
    i = argv.index("--save")
    if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
        return argv[i + 1]
    return os.path.join(RESULTS, os.path.splitext(os.path.basename(script))[0] + ".txt")


def run(main, script):
    """Runs main(), saving its output when --save was given."""
    path = _save_path(sys.argv, script)
    if path is None:
        return main()
    with recording(path, script):
        return main()


@contextlib.contextmanager
def recording(path, script):
    """Tees stdout into `path`, written when the block ends without error."""
    buffer = io.StringIO()
    buffer.write(f"# command: python bench/{os.path.basename(script)} {' '.join(sys.argv[1:])}\n"
                 f"# date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}\n"
                 f"# machine: {platform.node()} ({os.cpu_count()} CPUs)\n"
                 f"# versions: {_versions()}\n\n")
    real = sys.stdout
    sys.stdout = _Tee(real, buffer)
    try:
        yield
    finally:
        sys.stdout = real
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = path + ".tmp"
    with open(temporary, "w") as handle:
        handle.write(buffer.getvalue())
    os.replace(temporary, path)
    print(f"(saved to {path})")
