"""Every notebook's code cells run top to bottom (kept true as the API changes).

Cells that launch long experiments can opt out with a first line
`# notebook-only`, and are then skipped here.
"""
import glob
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    cells = json.load(open(path, encoding="utf-8"))["cells"]
    namespace = {"__name__": "__notebook__"}
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        if source.lstrip().startswith("# notebook-only"):
            continue
        exec(compile(source, f"{os.path.basename(path)}[cell {i}]", "exec"), namespace)
