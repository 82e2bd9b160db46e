"""The C core on its own: builds each tests/c/test_*.c program against the
library sources (no Python.h) and runs it.  With APPEALNET_C_SANITIZE=1 the
programs are built with AddressSanitizer + UndefinedBehaviorSanitizer and
any finding fails the test (.ci/run does this once).

The library is compiled once per session, one object per source and as many
compilers at a time as there are cores, then linked into each program: on a
2-core machine compiling it once per program took most of this file's time.

CC may name a cross compiler, with APPEALNET_C_RUNNER the command that runs
its programs: .ci/run builds the library for aarch64 with Debian's
gcc-aarch64-linux-gnu and runs these programs under qemu-aarch64, so the
portable path is built and tested on ARM, not only assumed to be."""
import concurrent.futures
import glob
import os
import shlex
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARY_SOURCES = sorted(
    f for f in glob.glob(os.path.join(ROOT, "csrc", "**", "*.c"), recursive=True)
    if os.sep + "python" + os.sep not in f)
PROGRAMS = sorted(glob.glob(os.path.join(ROOT, "tests", "c", "test_*.c")))


def _compiler():
    cc = os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        pytest.skip(f"no C compiler ({cc}) on PATH")
    return cc


def _sanitize():
    return os.environ.get("APPEALNET_C_SANITIZE", "") not in ("", "0")


def _flags():
    flags = ["-std=c11", "-O1" if _sanitize() else "-O2", "-fopenmp", "-g", "-Wall"]
    if _sanitize():
        flags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                  "-fno-sanitize-recover=undefined"]
    return flags


@pytest.fixture(scope="module")
def library_objects(tmp_path_factory):
    """The library's object files, compiled once with the flags of this run."""
    cc = _compiler()
    out = tmp_path_factory.mktemp("libappealnet")
    include = ["-I", os.path.join(ROOT, "csrc")]

    def compile_one(index_and_source):
        index, source = index_and_source
        obj = str(out / f"{index:03d}_{os.path.basename(source)[:-2]}.o")
        result = subprocess.run([cc, *_flags(), *include, "-c", source, "-o", obj],
                                capture_output=True, text=True)
        return source, obj, result

    workers = max(1, min(len(LIBRARY_SOURCES), os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(compile_one, enumerate(LIBRARY_SOURCES)))
    failures = [(source, r.stderr) for source, _, r in results if r.returncode != 0]
    assert not failures, "\n".join(f"{s}:\n{e[-3000:]}" for s, e in failures)
    return [obj for _, obj, _ in results]


@pytest.mark.parametrize("program", PROGRAMS, ids=[os.path.basename(p) for p in PROGRAMS])
def test_c_program(program, library_objects, tmp_path):
    cc = _compiler()
    env = dict(os.environ)
    if _sanitize():
        env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
        env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    exe = str(tmp_path / "prog")
    build = subprocess.run([cc, *_flags(), "-I", os.path.join(ROOT, "csrc"), program,
                            *library_objects, "-lm", "-o", exe], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-4000:]
    env.setdefault("OMP_NUM_THREADS", "2")
    runner = shlex.split(os.environ.get("APPEALNET_C_RUNNER", ""))
    run = subprocess.run([*runner, exe], capture_output=True, text=True, env=env, timeout=900)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert "runtime error" not in output, output[-6000:]  # UBSan findings
    assert "ERROR: AddressSanitizer" not in output and "ERROR: LeakSanitizer" not in output
