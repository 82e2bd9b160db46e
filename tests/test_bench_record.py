"""bench/_record.py: --save writes a results file headed by command, date,
machine and versions (nothing when the run fails), and regenerates the
saved-results section of bench/README.md from every results file, leaving
the hand-written text around it untouched."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import _record  # noqa: E402


def results_file(directory, name, command, body):
    path = directory / name
    path.write_text(f"# command: {command}\n# date: 2026-11-26 10:00 UTC\n# machine: m (2 CPUs)\n"
                    f"# versions: python 3.11\n\n{body}\n")
    return path


def test_the_section_is_appended_then_replaced_in_place(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    results_file(results, "gemm_1thread.txt", "python bench/gemm.py --threads 1", "2048x2048 0.99")
    (results / "notes.md").write_text("not a results file")
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nHand-written analysis.\n")

    _record.regenerate_readme(str(readme), str(results))
    first = readme.read_text()
    assert first.startswith("# Benchmarks\n\nHand-written analysis.\n")
    assert first.count(_record.BEGIN) == 1 and first.count(_record.END) == 1
    assert "python bench/gemm.py --threads 1" in first and "2048x2048 0.99" in first
    assert "not a results file" not in first

    # text after the section survives, and a new or changed file replaces the block
    readme.write_text(first + "\nMore prose.\n")
    results_file(results, "gemm_1thread.txt", "python bench/gemm.py --threads 1", "2048x2048 1.01")
    results_file(results, "conv_1thread.txt", "python bench/conv.py", "total 1.05")
    _record.regenerate_readme(str(readme), str(results))
    second = readme.read_text()
    assert second.count(_record.BEGIN) == 1 and second.endswith("\nMore prose.\n")
    assert "2048x2048 1.01" in second and "2048x2048 0.99" not in second
    assert second.index("conv_1thread.txt") < second.index("gemm_1thread.txt")  # sorted
    _record.regenerate_readme(str(readme), str(results))
    assert readme.read_text() == second  # idempotent
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))


def test_a_failed_run_saves_nothing_and_a_good_one_saves_its_output(tmp_path, capsys, monkeypatch):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with _record.recording(str(target), "bench/gemm.py"):
            print("partial")
            raise RuntimeError("the benchmark failed")
    assert not target.exists()
    with _record.recording(str(target), "bench/gemm.py"):
        print("all of it")
    text = target.read_text()
    assert text.startswith("# command: python bench/gemm.py") and "# versions: python" in text
    assert text.rstrip().endswith("all of it")
