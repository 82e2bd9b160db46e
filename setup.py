"""Build of appealnet's C core as the extension module appealnet._C.

OpenMP is detected per compiler; set APPEALNET_NO_OPENMP=1 to build without
it.  No -march=native and no fast-math: SIMD kernels are chosen at run time
and the wheel runs on any x86-64 or ARM machine.
"""
import os
import sys
import glob
import shutil
import tempfile
import subprocess

import numpy
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def _sources():
    files = sorted(glob.glob(os.path.join("csrc", "**", "*.c"), recursive=True))
    return [f for f in files if os.sep + "tests" + os.sep not in f]


def _compiler_accepts(compiler, flags, link_flags):
    """Compile and link a tiny OpenMP program with the given flags."""
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n")
        objects = compiler.compile([src], output_dir=tmp, extra_postargs=flags)
        compiler.link_executable(objects, "probe", output_dir=tmp, extra_postargs=link_flags)
        return True
    except Exception:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    def build_extensions(self):
        compiler = self.compiler
        ctype = compiler.compiler_type
        if ctype == "msvc":
            base = ["/O2", "/std:c11"]
            omp_candidates = [(["/openmp"], [])]
        else:
            base = ["-std=c11", "-O3", "-fno-math-errno", "-fno-strict-aliasing", "-Wall", "-Wno-unknown-pragmas",
                    "-fvisibility=hidden"]
            omp_candidates = [(["-fopenmp"], ["-fopenmp"]),
                              (["-Xpreprocessor", "-fopenmp"], ["-lomp"])]
        omp_compile, omp_link = [], []
        if os.environ.get("APPEALNET_NO_OPENMP", "") not in ("", "0"):
            print("appealnet: OpenMP disabled by APPEALNET_NO_OPENMP")
        else:
            for cflags, lflags in omp_candidates:
                if _compiler_accepts(compiler, cflags, lflags):
                    omp_compile, omp_link = cflags, lflags
                    break
            else:
                print("appealnet: compiler has no OpenMP; building single-threaded")
        for ext in self.extensions:
            ext.extra_compile_args = base + omp_compile + ext.extra_compile_args
            ext.extra_link_args = omp_link + ext.extra_link_args
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "appealnet._C",
            sources=_sources(),
            include_dirs=[numpy.get_include(), "csrc"],
            libraries=["m"] if sys.platform != "win32" else [],
        )
    ],
    cmdclass={"build_ext": BuildExt},
)
