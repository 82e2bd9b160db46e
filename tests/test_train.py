"""Trainers: fit, AppealNet joint training (white-box, black-box, cached big
losses, adaptive beta), checkpoints, exact resume, Ctrl-C, NaN handling."""
import json

import numpy as np
import pytest

import appealnet as an
from appealnet import nn, train


class ArrayLoader:
    """Shuffles by (seed, epoch); yields (images, targets, indices)."""

    def __init__(self, x, y, batch_size=16, seed=0, interrupt_at=None):
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.epoch, self.interrupt_at = 0, interrupt_at

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __iter__(self):
        order = np.random.default_rng((self.seed, self.epoch)).permutation(len(self.x))
        for b in range(len(self)):
            if self.interrupt_at == (self.epoch, b):
                self.interrupt_at = None
                raise KeyboardInterrupt
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield an.tensor(self.x[idx]), self.y[idx], idx


def blobs(n=128, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = np.array([[2, 0], [-2, 2], [0, -2]], dtype=np.float32)
    x = centers[y] + rng.normal(0, 0.7, (n, 2)).astype(np.float32)
    return x, y


class TinyTwoHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(2, 16), nn.ReLU())
        self.linear = nn.Linear(16, 3)
        self.predictor = nn.Linear(16, 1)

    def forward(self, x):
        h = self.body(x)
        return self.linear(h), self.predictor(h).reshape(-1)


def mlp():
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))


def params_of(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def test_fit_learns_and_logs(tmp_path):
    an.manual_seed(0)
    x, y = blobs()
    model = mlp()
    log = tmp_path / "log.jsonl"
    hist = train.fit(model, ArrayLoader(x, y), 8, lr=0.1, log=str(log), progress=False)
    assert len(hist) == 8 and hist[-1]["loss"] < 0.5 * hist[0]["loss"]
    assert hist[-1]["accuracy"] > 0.9
    lines = [json.loads(l) for l in log.read_text().splitlines()]
    assert [l["epoch"] for l in lines] == list(range(1, 9))
    assert train.evaluate(model, ArrayLoader(x, y))["accuracy"] > 0.9


def _run(tmp_path, interrupt_at=None, name="ck.npz", fn="fit"):
    an.manual_seed(1)
    x, y = blobs()
    model = mlp() if fn == "fit" else TinyTwoHead()
    loader = ArrayLoader(x, y, interrupt_at=interrupt_at)
    ck = str(tmp_path / name)
    kwargs = dict(lr=0.05, checkpoint=ck, progress=False, warmup_epochs=0.5)
    runner = train.fit if fn == "fit" else train.train_appealnet
    if fn != "fit":
        kwargs.update(budget=(1.0, 10.0, 4.0), adapt_beta=True)
    hist = runner(model, loader, 3, **kwargs)
    if interrupt_at is not None:
        assert hist.interrupted
        model2 = mlp() if fn == "fit" else TinyTwoHead()
        hist = runner(model2, ArrayLoader(x, y), 3, resume=True, **kwargs)
        model = model2
    return model, hist


@pytest.mark.parametrize("fn", ["fit", "appealnet"])
def test_resume_after_ctrl_c_equals_uninterrupted_run(tmp_path, fn):
    straight, hist_a = _run(tmp_path / "a", fn=fn)
    resumed, hist_b = _run(tmp_path / "b", interrupt_at=(1, 3), fn=fn)
    for k, v in params_of(straight).items():
        np.testing.assert_array_equal(params_of(resumed)[k], v, err_msg=k)
    assert [h["loss"] for h in hist_a] == [h["loss"] for h in hist_b]


def test_resume_refuses_checkpoint_of_another_model(tmp_path):
    x, y = blobs()
    ck = str(tmp_path / "ck.npz")
    train.fit(mlp(), ArrayLoader(x, y), 1, checkpoint=ck, progress=False)
    other = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(ValueError, match=r"another model: parameter '0.weight' has shape \[16, 2\]"):
        train.fit(other, ArrayLoader(x, y), 2, checkpoint=ck, resume=True, progress=False)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    x, y = blobs()
    ck = tmp_path / "ck.npz"
    model = mlp()
    train.fit(model, ArrayLoader(x, y), 1, checkpoint=str(ck), progress=False)
    before = ck.read_bytes()
    x_bad = x.copy()
    x_bad[5] = np.nan
    with pytest.raises(FloatingPointError, match="loss became nan at epoch 1"):
        train.fit(model, ArrayLoader(x_bad, y, batch_size=200), 1, checkpoint=str(ck), progress=False)
    assert ck.read_bytes() == before


def test_white_box_black_box_and_cached():
    an.manual_seed(2)
    x, y = blobs(96)
    big = mlp()
    train.fit(big, ArrayLoader(x, y), 6, progress=False)
    for kwargs in ({"big_model": big}, {}, {"big_losses": train.big_model_losses(big, x, y)}):
        model = TinyTwoHead()
        hist = train.train_appealnet(model, ArrayLoader(x, y), 4, beta=0.5, progress=False, **kwargs)
        assert hist[-1]["loss"] < hist[0]["loss"]
        assert 0.0 <= hist[-1]["skipping_rate"] <= 1.0 and hist[-1]["beta"] == 0.5
        logits, q = train.predict(model, x)
        assert logits.shape == (96, 3) and q.shape == (96,)


def test_adaptive_beta_moves_toward_target():
    an.manual_seed(3)
    x, y = blobs(96)
    model = TinyTwoHead()
    hist = train.train_appealnet(model, ArrayLoader(x, y), 5, budget=(1.0, 10.0, 2.0),
                                 adapt_beta=True, beta=0.0, progress=False)
    # b_hat = (10 - 2) / 9 = 0.889 > mean q at the start: beta must rise from 0
    assert hist[0]["target_skipping_rate"] == pytest.approx(8 / 9)
    assert hist[0]["beta_next"] > 0.0
    assert hist[-1]["skipping_rate"] >= hist[0]["skipping_rate"]


def test_bad_options():
    x, y = blobs(32)
    loader = ArrayLoader(x, y)
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        train.train_appealnet(TinyTwoHead(), loader, 1, beta=-1.0, progress=False)
    with pytest.raises(ValueError, match="strictly between"):
        train.train_appealnet(TinyTwoHead(), loader, 1, budget=(1, 10, 20), progress=False)
    with pytest.raises(ValueError, match="must exceed the edge cost"):
        train.train_appealnet(TinyTwoHead(), loader, 1, budget=(10, 5, 7), progress=False)
    with pytest.raises(ValueError, match="adapt_beta needs budget"):
        train.train_appealnet(TinyTwoHead(), loader, 1, adapt_beta=True, progress=False)
    wrong_big = nn.Sequential(nn.Linear(2, 5))
    with pytest.raises(ValueError, match="big model predicts 5 classes but the small model 3"):
        train.train_appealnet(TinyTwoHead(), loader, 1, big_model=wrong_big, progress=False)
    with pytest.raises(ValueError, match="optimizer must be"):
        train.fit(mlp(), loader, 1, optimizer="lbfgs", progress=False)
    with pytest.raises(TypeError, match="unexpected option"):
        train.fit(mlp(), loader, 1, learning_rate=0.1)
    with pytest.raises(ValueError, match="no batches"):
        train.fit(mlp(), ArrayLoader(x[:0], y[:0]), 1, progress=False)


def test_real_sigint_is_deferred_to_the_end_of_the_step(tmp_path):
    import os
    import signal

    class SignallingLoader(ArrayLoader):
        def __iter__(self):
            for b, batch in enumerate(super().__iter__()):
                if (self.epoch, b) == (1, 2):
                    os.kill(os.getpid(), signal.SIGINT)  # arrives while this batch trains
                yield batch

    an.manual_seed(1)
    x, y = blobs()
    ck = str(tmp_path / "ck.npz")
    hist = train.fit(mlp(), SignallingLoader(x, y), 3, checkpoint=ck, progress=False, lr=0.05)
    assert hist.interrupted and len(hist) == 1
    from appealnet._checkpoint import load_checkpoint
    state = load_checkpoint(ck)
    assert state["epoch"] == 1 and state["batch"] == 3  # the signalled batch finished its step
    resumed = mlp()
    train.fit(resumed, ArrayLoader(x, y), 3, checkpoint=ck, resume=True, progress=False, lr=0.05)
    an.manual_seed(1)
    straight = mlp()
    train.fit(straight, ArrayLoader(x, y), 3, progress=False, lr=0.05)
    for k, v in params_of(straight).items():
        np.testing.assert_array_equal(params_of(resumed)[k], v, err_msg=k)
