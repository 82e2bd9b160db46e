"""The C core on its own: builds each tests/c/test_*.c program against the
library sources (no Python.h) and runs it.  With APPEALNET_C_SANITIZE=1 the
programs are built with AddressSanitizer + UndefinedBehaviorSanitizer and
any finding fails the test (.ci/run does this once)."""
import glob
import os
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


@pytest.mark.parametrize("program", PROGRAMS, ids=[os.path.basename(p) for p in PROGRAMS])
def test_c_program(program, tmp_path):
    cc = _compiler()
    sanitize = os.environ.get("APPEALNET_C_SANITIZE", "") not in ("", "0")
    flags = ["-std=c11", "-O1" if sanitize else "-O2", "-fopenmp", "-g", "-Wall"]
    env = dict(os.environ)
    if sanitize:
        flags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                  "-fno-sanitize-recover=undefined"]
        env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
        env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    exe = str(tmp_path / "prog")
    build = subprocess.run([cc, *flags, "-I", os.path.join(ROOT, "csrc"), program, *LIBRARY_SOURCES,
                            "-lm", "-o", exe], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-4000:]
    env.setdefault("OMP_NUM_THREADS", "2")
    run = subprocess.run([exe], capture_output=True, text=True, env=env, timeout=600)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert "runtime error" not in output, output[-6000:]  # UBSan findings
    assert "ERROR: AddressSanitizer" not in output and "ERROR: LeakSanitizer" not in output
