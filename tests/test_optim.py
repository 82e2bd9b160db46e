"""appealnet.optim against torch.optim: SGD / Adam / AdamW updates, the C
update loops (errors, empty, threads), optimizer bookkeeping and the LR
schedules step by step."""
import math

import numpy as np
import pytest

import appealnet as an
import appealnet._C as C
import appealnet.nn as nn
import appealnet.optim as optim
from appealnet.optim import lr_scheduler
from gradcheck import torch_or_skip

SHAPES = [(4, 3), (7,), (2, 3, 2, 2)]


def _params_and_grads(seed=0, steps=5):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(steps)]
    return params, grads


def _run_both(an_cls, torch_cls, kwargs, steps=5, skip_grad_of=None):
    """Same params and grads through appealnet and torch; returns both
    final parameter lists.  skip_grad_of: index whose grad stays None."""
    torch = torch_or_skip()
    torch.set_num_threads(1)
    init, grads = _params_and_grads(steps=steps)
    ours = [nn.Parameter(an.tensor(a)) for a in init]
    theirs = [torch.nn.Parameter(torch.tensor(a)) for a in init]
    opt_a = an_cls(ours, **kwargs)
    opt_t = torch_cls(theirs, **kwargs)
    for step in range(steps):
        for i, (pa, pt) in enumerate(zip(ours, theirs)):
            if i == skip_grad_of:
                continue
            pa.grad = an.tensor(grads[step][i])
            pt.grad = torch.tensor(grads[step][i])
        opt_a.step()
        opt_t.step()
    return ([np.asarray(p.detach()) for p in ours], [p.detach().numpy() for p in theirs], init)


SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.1, weight_decay=0.05),
    dict(lr=0.05, momentum=0.8, weight_decay=0.01, nesterov=True),
]


@pytest.mark.parametrize("kwargs", SGD_CONFIGS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_sgd_matches_torch(kwargs):
    torch = torch_or_skip()
    ours, theirs, init = _run_both(optim.SGD, torch.optim.SGD, kwargs)
    for a, t, p0 in zip(ours, theirs, init):
        np.testing.assert_allclose(a, t, rtol=1e-6, atol=1e-7)
        assert not np.array_equal(a, p0)  # the parameters really moved


ADAM_CONFIGS = [
    dict(lr=1e-2),
    dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=1e-2, weight_decay=0.1),
]


@pytest.mark.parametrize("kwargs", ADAM_CONFIGS, ids=str)
def test_adam_matches_torch(kwargs):
    torch = torch_or_skip()
    ours, theirs, _ = _run_both(optim.Adam, torch.optim.Adam, kwargs)
    for a, t in zip(ours, theirs):
        np.testing.assert_allclose(a, t, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kwargs", [dict(lr=1e-2), dict(lr=1e-2, weight_decay=0.3),
                                    dict(lr=3e-2, betas=(0.5, 0.9), weight_decay=0.0)], ids=str)
def test_adamw_matches_torch(kwargs):
    torch = torch_or_skip()
    ours, theirs, _ = _run_both(optim.AdamW, torch.optim.AdamW, kwargs)
    for a, t in zip(ours, theirs):
        np.testing.assert_allclose(a, t, rtol=1e-6, atol=1e-7)


def test_adamw_decay_differs_from_adam_l2():
    init, grads = _params_and_grads(steps=1)
    results = []
    for cls in (optim.Adam, optim.AdamW):
        p = nn.Parameter(an.tensor(init[0]))
        opt = cls([p], lr=0.1, weight_decay=0.5)
        p.grad = an.tensor(grads[0][0])
        opt.step()
        results.append(np.asarray(p.detach()))
    assert not np.allclose(results[0], results[1])


def test_param_without_grad_is_skipped_and_has_no_state():
    torch = torch_or_skip()
    ours, theirs, init = _run_both(optim.Adam, torch.optim.Adam, dict(lr=0.1), skip_grad_of=1)
    np.testing.assert_array_equal(ours[1], init[1])
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-6, atol=1e-7)
    p = nn.Parameter(an.zeros(3))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    opt.step()
    assert opt.state_dict()["state"] == {}


def test_per_group_options():
    torch = torch_or_skip()
    init, grads = _params_and_grads(steps=3)
    ours = [nn.Parameter(an.tensor(a)) for a in init]
    theirs = [torch.nn.Parameter(torch.tensor(a)) for a in init]
    groups_a = [{"params": ours[:2]}, {"params": ours[2:], "lr": 0.5, "momentum": 0.5}]
    groups_t = [{"params": theirs[:2]}, {"params": theirs[2:], "lr": 0.5, "momentum": 0.5}]
    opt_a = optim.SGD(groups_a, lr=0.1, momentum=0.9)
    opt_t = torch.optim.SGD(groups_t, lr=0.1, momentum=0.9)
    assert opt_a.param_groups[0]["lr"] == 0.1 and opt_a.param_groups[1]["momentum"] == 0.5
    for step in range(3):
        for i in range(3):
            ours[i].grad = an.tensor(grads[step][i])
            theirs[i].grad = torch.tensor(grads[step][i])
        opt_a.step()
        opt_t.step()
    for a, t in zip(ours, theirs):
        np.testing.assert_allclose(np.asarray(a.detach()), t.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_constructor_errors_like_torch():
    p = nn.Parameter(an.zeros(3))
    with pytest.raises(ValueError, match="Invalid learning rate: -0.1"):
        optim.SGD([p], lr=-0.1)
    with pytest.raises(ValueError, match="Invalid momentum value"):
        optim.SGD([p], lr=0.1, momentum=-1)
    with pytest.raises(ValueError, match="Invalid weight_decay value"):
        optim.SGD([p], lr=0.1, weight_decay=-1)
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum and zero dampening"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="Nesterov momentum requires"):
        optim.SGD([p], lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError, match="Invalid beta parameter at index 1: 1.0"):
        optim.Adam([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="Invalid epsilon value"):
        optim.Adam([p], eps=-1.0)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="iterable of Tensors"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([p * 2.0], lr=0.1)


def test_zero_grad():
    p = nn.Parameter(an.zeros(3))
    opt = optim.SGD([p], lr=0.1)
    p.grad = an.tensor([1.0, 2.0, 3.0])
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(np.asarray(p.grad), np.zeros(3, np.float32))
    opt.zero_grad()
    assert p.grad is None


def test_state_dict_round_trip_continues_identically():
    init, grads = _params_and_grads(steps=6)
    runs = []
    for resume in (False, True):
        params = [nn.Parameter(an.tensor(a)) for a in init]
        opt = optim.Adam(params, lr=0.05, weight_decay=0.01)
        for step in range(6):
            if resume and step == 3:
                saved = opt.state_dict()
                assert saved["state"][0]["step"] == 3
                assert saved["state"][0]["exp_avg"].shape == SHAPES[0]
                opt = optim.Adam(params, lr=1.0)
                opt.load_state_dict(saved)
                assert opt.param_groups[0]["lr"] == 0.05
            for i, p in enumerate(params):
                p.grad = an.tensor(grads[step][i])
            opt.step()
        runs.append([np.asarray(p.detach()) for p in params])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_load_state_dict_errors():
    p, q = nn.Parameter(an.zeros(3)), nn.Parameter(an.zeros(2))
    opt = optim.SGD([p, q], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="different number of parameter groups"):
        opt.load_state_dict({"state": {}, "param_groups": []})
    with pytest.raises(ValueError, match="doesn't match the size"):
        opt.load_state_dict({"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]})
    bad = {"state": {1: {"momentum_buffer": np.zeros(5, np.float32)}},
           "param_groups": [dict(opt.param_groups[0], params=[0, 1])]}
    with pytest.raises(ValueError, match=r"has shape \[5\], parameter has \[2\]"):
        opt.load_state_dict(bad)


def test_step_closure_returns_loss():
    p = nn.Parameter(an.tensor([1.0, -2.0]))
    opt = optim.SGD([p], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == pytest.approx(5.0)
    np.testing.assert_allclose(np.asarray(p.detach()), [0.5, -1.0])


# ------------------------------------------------------------ C update loops
def test_c_sgd_step_validates():
    p = an.zeros(4, 3)
    with pytest.raises(ValueError, match=r"sgd_step: grad has shape \[3, 4\] but param has shape \[4, 3\]"):
        C.sgd_step(p, an.zeros(3, 4), None, 0.1, 0.0, 0.0, 0.0, False, False)
    with pytest.raises(ValueError, match=r"sgd_step: momentum 0.9 needs a momentum_buffer"):
        C.sgd_step(p, an.zeros(4, 3), None, 0.1, 0.9, 0.0, 0.0, False, True)
    with pytest.raises(ValueError, match=r"sgd_step: grad \(shape \[4, 3\]\) must be contiguous"):
        C.sgd_step(p, an.zeros(3, 4).transpose(0, 1), None, 0.1, 0.0, 0.0, 0.0, False, False)
    with pytest.raises(ValueError, match="nesterov momentum requires"):
        C.sgd_step(p, an.zeros(4, 3), an.zeros(4, 3), 0.1, 0.9, 0.5, 0.0, True, False)
    with pytest.raises(ValueError, match="invalid learning rate"):
        C.sgd_step(p, an.zeros(4, 3), None, -1.0, 0.0, 0.0, 0.0, False, False)
    with pytest.raises(TypeError, match="sgd_step"):
        C.sgd_step(p, np.zeros((4, 3), np.float32), None, 0.1, 0.0, 0.0, 0.0, False, False)


def test_c_adam_step_validates():
    p = an.zeros(5)
    z = an.zeros(5)
    with pytest.raises(ValueError, match=r"adam_step: exp_avg_sq has shape \[4\]"):
        C.adam_step(p, z, an.zeros(5), an.zeros(4), 1, 0.1, 0.9, 0.999, 1e-8, 0.0, False)
    with pytest.raises(ValueError, match="adamw_step: step counts from 1, got 0"):
        C.adam_step(p, z, an.zeros(5), an.zeros(5), 0, 0.1, 0.9, 0.999, 1e-8, 0.0, True)
    with pytest.raises(ValueError, match=r"adam_step: invalid betas \(0.9, 1\)"):
        C.adam_step(p, z, an.zeros(5), an.zeros(5), 1, 0.1, 0.9, 1.0, 1e-8, 0.0, False)
    with pytest.raises(ValueError, match=r"adam_step: param \(shape \[5\]\) must be contiguous"):
        q = an.zeros(10)[::2]
        C.adam_step(q, z, an.zeros(5), an.zeros(5), 1, 0.1, 0.9, 0.999, 1e-8, 0.0, False)


def test_c_steps_on_empty_tensors():
    p, g = an.zeros(0, 3), an.zeros(0, 3)
    C.sgd_step(p, g, an.zeros(0, 3), 0.1, 0.9, 0.0, 0.0, False, True)
    C.adam_step(p, g, an.zeros(0, 3), an.zeros(0, 3), 1, 0.1, 0.9, 0.999, 1e-8, 0.1, True)
    assert p.shape == (0, 3)


def test_nan_gradient_propagates():
    p = nn.Parameter(an.tensor([1.0, 2.0]))
    opt = optim.Adam([p], lr=0.1)
    p.grad = an.tensor([float("nan"), 1.0])
    opt.step()
    values = np.asarray(p.detach())
    assert math.isnan(values[0]) and math.isfinite(values[1])


def test_noncontiguous_grad_is_accepted_by_optimizer():
    rng = np.random.default_rng(3)
    g = rng.standard_normal((3, 4)).astype(np.float32)
    results = []
    for grad in (an.tensor(g.T.copy()), an.tensor(g).transpose(0, 1)):
        p = nn.Parameter(an.zeros(4, 3))
        opt = optim.SGD([p], lr=0.5, momentum=0.9)
        p.grad = grad
        opt.step()
        results.append(np.asarray(p.detach()))
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_c_steps_identical_across_thread_counts(name):
    n = 200_003  # above AN_PARALLEL_GRAIN, not a multiple of any vector width
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal(n).astype(np.float32)
    grads = [rng.standard_normal(n).astype(np.float32) for _ in range(3)]
    results = []
    previous = an.get_num_threads()
    for threads in (1, 2):
        an.set_num_threads(threads)
        try:
            p = nn.Parameter(an.tensor(p0))
            opt = (optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
                   if name == "sgd" else optim.AdamW([p], lr=0.01))
            for g in grads:
                p.grad = an.tensor(g)
                opt.step()
            results.append(np.asarray(p.detach()).copy())
        finally:
            an.set_num_threads(previous)
    np.testing.assert_array_equal(results[0], results[1])


# ------------------------------------------------------------- schedulers
def _lr_sequences(make_ours, make_torch, steps=30, lr=0.1, groups=1):
    torch = torch_or_skip()
    ours_opt = optim.SGD([{"params": [nn.Parameter(an.zeros(1))], "lr": lr * (g + 1)}
                          for g in range(groups)], lr=lr)
    torch_opt = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr * (g + 1)}
                                 for g in range(groups)], lr=lr)
    ours, theirs = make_ours(ours_opt), make_torch(torch_opt, torch.optim.lr_scheduler)
    seq_a, seq_t = [ours.get_last_lr()], [theirs.get_last_lr()]
    for _ in range(steps):
        ours_opt.step()
        torch_opt.step()
        ours.step()
        theirs.step()
        seq_a.append(ours.get_last_lr())
        seq_t.append(theirs.get_last_lr())
        assert [g["lr"] for g in ours_opt.param_groups] == seq_a[-1]
    return seq_a, seq_t


SCHEDULES = {
    "step": (lambda o: lr_scheduler.StepLR(o, step_size=7, gamma=0.5),
             lambda o, S: S.StepLR(o, step_size=7, gamma=0.5)),
    "multistep": (lambda o: lr_scheduler.MultiStepLR(o, milestones=[3, 10, 10, 20], gamma=0.3),
                  lambda o, S: S.MultiStepLR(o, milestones=[3, 10, 10, 20], gamma=0.3)),
    "exponential": (lambda o: lr_scheduler.ExponentialLR(o, gamma=0.9),
                    lambda o, S: S.ExponentialLR(o, gamma=0.9)),
    "cosine": (lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=12, eta_min=1e-3),
               lambda o, S: S.CosineAnnealingLR(o, T_max=12, eta_min=1e-3)),
    "linear": (lambda o: lr_scheduler.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=6),
               lambda o, S: S.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=6)),
    "lambda": (lambda o: lr_scheduler.LambdaLR(o, lambda e: 0.95 ** e),
               lambda o, S: S.LambdaLR(o, lambda e: 0.95 ** e)),
    "warmup_cosine": (
        lambda o: lr_scheduler.SequentialLR(
            o, [lr_scheduler.LinearLR(o, start_factor=0.01, total_iters=5),
                lr_scheduler.CosineAnnealingLR(o, T_max=20, eta_min=1e-4)], milestones=[5]),
        lambda o, S: S.SequentialLR(
            o, [S.LinearLR(o, start_factor=0.01, total_iters=5),
                S.CosineAnnealingLR(o, T_max=20, eta_min=1e-4)], milestones=[5])),
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_scheduler_matches_torch_step_by_step(name):
    make_ours, make_torch = SCHEDULES[name]
    seq_a, seq_t = _lr_sequences(make_ours, make_torch, steps=30, groups=2)
    assert seq_a == seq_t  # bit-equal: the same formulas in the same order
    assert len({tuple(s) for s in seq_a}) > 2  # the rate really changed


def test_scheduler_state_dict_resume():
    def make(o):
        return lr_scheduler.SequentialLR(
            o, [lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=3),
                lr_scheduler.CosineAnnealingLR(o, T_max=10)], milestones=[3])

    opt = optim.SGD([nn.Parameter(an.zeros(1))], lr=0.2)
    sched = make(opt)
    reference = []
    for _ in range(12):
        sched.step()
        reference.append(sched.get_last_lr())
    opt2 = optim.SGD([nn.Parameter(an.zeros(1))], lr=0.2)
    sched2 = make(opt2)
    for _ in range(5):
        sched2.step()
    saved_sched, saved_opt = sched2.state_dict(), opt2.state_dict()
    opt3 = optim.SGD([nn.Parameter(an.zeros(1))], lr=0.2)
    sched3 = make(opt3)
    opt3.load_state_dict(saved_opt)
    sched3.load_state_dict(saved_sched)
    resumed = reference[:5]
    for _ in range(7):
        sched3.step()
        resumed.append(sched3.get_last_lr())
    assert resumed == reference


def test_scheduler_errors():
    opt = optim.SGD([nn.Parameter(an.zeros(1))], lr=0.2)
    with pytest.raises(TypeError, match="is not an Optimizer"):
        lr_scheduler.StepLR(object(), step_size=3)
    with pytest.raises(ValueError, match="Starting multiplicative factor"):
        lr_scheduler.LinearLR(opt, start_factor=0.0)
    with pytest.raises(ValueError, match="number of milestones"):
        lr_scheduler.SequentialLR(opt, [lr_scheduler.StepLR(opt, 2)], milestones=[3])
    with pytest.raises(ValueError, match="Expected 1 lr_lambdas, but got 2"):
        lr_scheduler.LambdaLR(opt, [lambda e: 1.0, lambda e: 1.0])
