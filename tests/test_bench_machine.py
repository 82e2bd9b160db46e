"""bench/_machine.py: every benchmark prints the CPU line and one core's FMA
peak measured in the same run (issue 4)."""
import os
import shutil
import sys

import pytest

import appealnet as an

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import _machine  # noqa: E402


def test_isa_of_reads_appealnets_cpu_line():
    assert _machine.isa_of("AMD EPYC; isa=avx512 (gemm avx512_14x32); L1d=48K") == "avx512"
    assert _machine.isa_of("Neoverse; isa=neon (gemm neon_12x8); L1d=64K") == "neon"
    assert _machine.isa_of("x; isa=generic; L1d=32K") == "generic"
    assert _machine.isa_of("no isa field here") == "generic"
    assert _machine.isa_of(an.cpu_info()) in ("generic", "avx2", "avx512", "neon")


def test_no_loop_for_the_portable_level_or_an_unknown_isa():
    assert _machine.measure_peak("generic") is None
    assert _machine.measure_peak("sse9") is None


@pytest.mark.skipif(shutil.which(os.environ.get("CC", "gcc")) is None, reason="no C compiler")
def test_print_peak_measures_this_machine(capsys):
    cpu = an.cpu_info()
    peak = _machine.print_peak(cpu, 2)
    out = capsys.readouterr().out
    assert out.startswith(f"cpu: {cpu}\n")
    if _machine.isa_of(cpu) in _machine.PEAK_ISAS:
        # one core's fp32 FMA rate: 4-wide NEON at >= 1 GHz gives >= 8 GFLOP/s;
        # nothing shipping reaches 2 TFLOP/s on one core
        assert 8.0 < peak < 2000.0
        assert f"{peak:.1f} GFLOP/s; 2 core(s): {2 * peak:.1f} GFLOP/s" in out
    else:
        assert peak is None and "not measured" in out
