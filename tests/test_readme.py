"""The README's examples must work as written: run its Python blocks in order."""
import os
import re

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 2, "README lost its python examples"
    namespace = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md[block {i}]", "exec"), namespace)
    loss = namespace["loss"].item()
    assert np.isfinite(loss)
    assert (tmp_path / "two_head.anw").exists()
    import appealnet as an
    reloaded = an.load(str(tmp_path / "two_head.anw"))
    assert type(reloaded).__name__ == "TwoHead"


def test_readme_model_table_matches_the_profiler():
    import appealnet as an
    from appealnet import models
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    rows = re.findall(r"^\| (\w+)[^|]* \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", text, flags=re.M)
    assert len(rows) == len(models.list_models())
    for name, params, macs, paper in rows:
        if name in ("resnet101", "resnet152", "resnet50", "resnet34"):
            continue  # large: their counts are checked in test_profiler
        p = an.profile(models.create(name), (3, 32, 32))
        assert abs(p.params / 1e6 - float(params)) < 0.006, name
        assert abs(p.macs / 1e6 - float(macs)) < 0.006, name
