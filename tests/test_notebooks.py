"""Every notebook runs top to bottom, so a notebook that breaks fails CI.

With nbclient and ipykernel installed (CI installs them) the notebook runs
in a real Jupyter kernel; otherwise its code cells run in this process.
"""
import glob
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))


def _run_in_process(path):
    namespace = {"__name__": "__notebook__"}
    for i, cell in enumerate(json.load(open(path, encoding="utf-8"))["cells"]):
        if cell["cell_type"] == "code":
            source = "".join(cell["source"])
            exec(compile(source, f"{os.path.basename(path)}[cell {i}]", "exec"), namespace)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch, tmp_path):
    monkeypatch.chdir(os.path.dirname(path))
    try:
        import nbformat
        from nbclient import NotebookClient
        import ipykernel  # noqa: F401  (the kernel nbclient starts)
    except ImportError:
        _run_in_process(path)
        return
    # the kernel imports the same appealnet as this test process
    import appealnet
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(appealnet.__file__)))
    monkeypatch.chdir(tmp_path)  # the source tree's uncompiled package must not shadow it
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [package_parent] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(path)}}).execute()
