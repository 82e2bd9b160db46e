"""The main job, `appealnet run`, end to end on a small configuration:
files written, every number of results.json recomputable from scores.npz,
reuse of trained stages, refusal of a foreign --out, bad options."""
import json
import os
import numpy as np
import pytest

from appealnet import cli, metrics
from appealnet.testing import assert_results
from gradcheck import run_python

SMALL_RUN = ["run", "--big", "resnet20", "--small", "resnet8", "--epochs", "3", "0", "1",
             "--limit", "300", "--quiet", "--seed", "3"]


@pytest.fixture(scope="module")
def white_box_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("wb"))
    assert cli.main(SMALL_RUN + ["--out", out]) == 0
    return out


def test_files_and_layout(white_box_run, capsys):
    for name in ("results.json", "scores.npz", "val_scores.npz", "table.md", "config.json",
                 "big.anw", "small.anw", "appealnet-linear.anw"):
        assert os.path.exists(os.path.join(white_box_run, name)), name
    results = json.load(open(os.path.join(white_box_run, "results.json")))
    assert results["dataset"] == "digits" and results["setting"] == "white-box"
    assert results["seed"] == 3 and "--limit" in results["command"]
    assert {"appealnet", "numpy", "python"} <= set(results["versions"])
    methods = {row["method"] for row in results["rows"]}
    assert {"sm", "msp", "entropy", "approx-sm", "approx-msp", "approx-entropy", "appealnet"} <= methods
    keys = {"method", "acci_target", "protocol", "delta", "skipping_rate", "appealing_rate",
            "accuracy", "acci", "cost", "relative_saving"}
    for row in results["rows"]:
        assert keys <= set(row)
    assert {row["acci_target"] for row in results["rows"]} == {0.5, 0.75, 0.9, 0.95}
    assert {row["protocol"] for row in results["rows"]} == {"test-tuned", "val-tuned"}
    table = open(os.path.join(white_box_run, "table.md")).read()
    assert "Table I" in table and "Relative saving at 90% AccI" in table
    scores = np.load(os.path.join(white_box_run, "scores.npz"))
    for key in ("target", "big_pred", "small_pred", "approx_pred", "q", "msp", "margin",
                "neg_entropy", "approx_msp", "approx_margin", "approx_neg_entropy"):
        assert key in scores.files, key


def test_every_row_recomputes_from_scores(white_box_run):
    results = json.load(open(os.path.join(white_box_run, "results.json")))
    test = dict(np.load(os.path.join(white_box_run, "scores.npz")))
    val = dict(np.load(os.path.join(white_box_run, "val_scores.npz")))
    methods = {"sm": ("margin", "small_pred"), "msp": ("msp", "small_pred"),
               "appealnet": ("q", "approx_pred"), "approx-sm": ("approx_margin", "approx_pred")}
    checked = 0
    for row in results["rows"]:
        if row["method"] not in methods:
            continue
        score, pred = methods[row["method"]]
        c1, c0 = results["c1"][row["method"]], results["c0"][row["method"]]
        points = metrics.tune_and_report(
            val[score], val[pred], val["big_pred"], val["target"],
            test[score], test[pred], test["big_pred"], test["target"], row["acci_target"],
            c1=c1, c0=c0, val_reference_pred=val["small_pred"], test_reference_pred=test["small_pred"])
        point = points[row["protocol"]]
        for key in ("delta", "skipping_rate", "accuracy", "acci", "cost"):
            assert point.as_dict()[key] == pytest.approx(row[key]), (row, key)
        checked += 1
    assert checked == 4 * 4 * 2


def test_relative_saving_is_against_score_margin(white_box_run):
    results = json.load(open(os.path.join(white_box_run, "results.json")))
    rows = {(r["method"], r["acci_target"], r["protocol"]): r for r in results["rows"]}
    for (method, acci, protocol), row in rows.items():
        base = rows[("sm", acci, protocol)]
        assert row["relative_saving"] == pytest.approx((base["cost"] - row["cost"]) / base["cost"])
    assert_results(os.path.join(white_box_run, "results.json"), method="sm", acci=0.5,
                   protocol="test-tuned", min_saving=0.0)


def test_rerun_reuses_trained_models_and_refuses_foreign_out(white_box_run, capsys):
    before = open(os.path.join(white_box_run, "results.json")).read()
    assert cli.main(SMALL_RUN + ["--out", white_box_run]) == 0
    after = json.load(open(os.path.join(white_box_run, "results.json")))
    assert after["rows"] == json.loads(before)["rows"]
    assert "loading" in capsys.readouterr().err
    code = cli.main(SMALL_RUN[:-2] + ["--seed", "4", "--out", white_box_run])
    assert code == 2
    assert "different configuration (differs in: seed)" in capsys.readouterr().err


def test_black_box_writes_table_two(tmp_path):
    out = str(tmp_path)
    argv = ["run", "--setting", "black-box", "--small", "resnet8", "--epochs", "0", "1", "1",
            "--limit", "200", "--quiet", "--out", out]
    assert cli.main(argv) == 0
    scores = np.load(os.path.join(out, "scores.npz"))
    np.testing.assert_array_equal(scores["big_pred"], scores["target"])  # the cloud is an oracle
    assert not os.path.exists(os.path.join(out, "big.anw"))
    assert "Table II" in open(os.path.join(out, "table.md")).read()


@pytest.mark.parametrize("argv,message", [
    (["run", "--budget", "3"], "--budget needs --c0 and --c1"),
    (["run", "--beta", "1", "--budget", "3", "--c0", "5", "--c1", "1"], "not both"),
    (["run", "--small", "resnet9"], "unknown model 'resnet9'; known models: efficientnet_b0"),
    (["run", "--epochs", "1", "2"], "one number or three"),
    (["run", "--dataset", "cifar10"], "--data-dir is needed"),
    (["run", "--beta", "-1"], "beta must be a finite number >= 0"),
])
def test_bad_options(argv, message, tmp_path, capsys):
    assert cli.main(argv + ["--out", str(tmp_path), "--quiet"]) == 2
    assert message in capsys.readouterr().err


def test_module_entry_point_help():
    out = run_python(["-m", "appealnet", "run", "--help"], timeout=60)
    assert out.returncode == 0 and "--setting" in out.stdout and "--budget" in out.stdout
