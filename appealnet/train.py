"""Trainers: a single-head model (the big cloud model, the plain small model)
and AppealNet's joint training of a two-head model (Algorithm 1), white-box
or black-box.

A loader is anything iterable over batches ``(images, targets)`` or
``(images, targets, indices)`` — images an appealnet Tensor [N, C, H, W],
targets int64 numpy [N], indices the positions of the samples in the
dataset (needed only for cached big-model losses) — with ``len()`` and,
optionally, ``set_epoch(epoch)`` so augmentation and shuffling depend only
on (seed, epoch).  ``appealnet.data.DataLoader`` is one.

Every trainer:
  * uses SGD (momentum, Nesterov) or Adam/AdamW from appealnet.optim with a
    per-step schedule (linear warm-up, then cosine / step / constant);
  * logs one JSON line per epoch (``log=path``) and shows progress (tqdm when
    installed, a plain line per epoch otherwise);
  * writes a checkpoint atomically after every epoch (``checkpoint=path``)
    and when interrupted with Ctrl-C (then it stops cleanly, returning the
    history with ``interrupted=True``); ``resume=True`` continues from the
    checkpoint and gives the same numbers as an uninterrupted run;
  * stops on a NaN/inf loss with a clear error, leaving the last good
    checkpoint in place.
"""
import json
import math
import os
import sys
import time

import numpy as np

from . import _C
from ._api import get_rng_state, no_grad, set_rng_state
from ._checkpoint import load_checkpoint, save_checkpoint
from .losses import BetaController, appeal_loss, target_skipping_rate
from .nn import functional as F
from .nn.utils import clip_grad_norm_
from .optim import SGD, Adam, AdamW
from .optim import lr_scheduler

__all__ = ["fit", "train_appealnet", "evaluate", "predict", "big_model_losses", "History"]


class History(list):
    """One dict per finished epoch; ``interrupted`` tells whether Ctrl-C
    stopped the run (a checkpoint holds its state)."""

    interrupted = False


# ----------------------------------------------------------------- helpers
def _make_optimizer(params, name, lr, momentum, weight_decay, nesterov):
    if name == "sgd":
        return SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                   nesterov=nesterov and momentum > 0)
    if name == "adam":
        return Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'sgd', 'adam' or 'adamw', got {name!r}")


def _make_schedule(optimizer, schedule, total_steps, warmup_steps, milestones=None):
    """A per-step schedule built from appealnet.optim.lr_scheduler."""
    main_steps = max(1, total_steps - warmup_steps)
    if schedule == "cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=main_steps)
    elif schedule == "step":
        marks = milestones or [int(main_steps * 0.5), int(main_steps * 0.75)]
        main = lr_scheduler.MultiStepLR(optimizer, milestones=marks, gamma=0.1)
    elif schedule == "constant":
        main = lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    else:
        raise ValueError(f"schedule must be 'cosine', 'step' or 'constant', got {schedule!r}")
    if warmup_steps <= 0:
        return main
    warm = lr_scheduler.LinearLR(optimizer, start_factor=0.1, end_factor=1.0, total_iters=warmup_steps)
    return lr_scheduler.SequentialLR(optimizer, [warm, main], milestones=[warmup_steps])


def _unpack(batch):
    if len(batch) == 3:
        return batch
    images, targets = batch
    return images, targets, None


def _model_signature(model):
    return [[name, list(p.shape)] for name, p in model.state_dict().items()]


class _Progress:
    """tqdm when installed; otherwise one plain line per epoch."""

    def __init__(self, enabled, total, desc):
        self.bar = None
        self.enabled = enabled
        if enabled:
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
            except ImportError:
                self.bar = None

    def update(self, **fields):
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v)
                                  for k, v in fields.items()}, refresh=False)

    def close(self, line):
        if self.bar is not None:
            self.bar.close()
        if self.enabled:
            print(line, file=sys.stderr, flush=True)


class _Trainer:
    """The epoch loop shared by fit and train_appealnet.

    ``step(images, targets, indices)`` returns (loss tensor, stats dict of
    sums); ``epoch_end(sums, n)`` turns the sums into the epoch's record and
    may adapt state (beta)."""

    def __init__(self, model, loader, epochs, *, kind, step, epoch_end, extra_state, optimizer,
                 lr, momentum, weight_decay, nesterov, schedule, warmup_epochs, grad_clip,
                 checkpoint, log, progress, config, val_fn=None):
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if len(loader) == 0:
            raise ValueError("the training loader yields no batches (empty dataset?)")
        self.model, self.loader, self.epochs = model, loader, int(epochs)
        self.kind, self.step, self.epoch_end = kind, step, epoch_end
        self.extra_state = extra_state
        self.grad_clip = grad_clip
        self.checkpoint, self.log, self.progress = checkpoint, log, progress
        self.config, self.val_fn = config, val_fn
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = _make_optimizer(params, optimizer, lr, momentum, weight_decay, nesterov)
        steps_per_epoch = len(loader)
        self.scheduler = _make_schedule(self.optimizer, schedule, steps_per_epoch * self.epochs,
                                        int(round(warmup_epochs * steps_per_epoch)))
        self.history = History()
        self.start_epoch, self.start_batch, self.partial = 0, 0, None

    # ---------------------------------------------------------- state
    def _state(self, epoch, batch, partial):
        return {
            "kind": self.kind,
            "model_signature": _model_signature(self.model),
            "model": dict(self.model.state_dict()),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": epoch, "batch": batch, "partial": partial,
            "rng": list(get_rng_state()),
            "extra": self.extra_state.state_dict() if self.extra_state else None,
            "history": list(self.history),
            "config": self.config,
        }

    def _save(self, epoch, batch, partial):
        if self.checkpoint:
            save_checkpoint(self.checkpoint, self._state(epoch, batch, partial))

    def resume(self):
        state = load_checkpoint(self.checkpoint)
        if state.get("kind") != self.kind:
            raise ValueError(f"checkpoint {self.checkpoint} was written by a {state.get('kind')!r} "
                             f"run, not {self.kind!r}")
        mine = _model_signature(self.model)
        if state["model_signature"] != mine:
            theirs = {n: s for n, s in state["model_signature"]}
            for name, shape in mine:
                if theirs.get(name) != shape:
                    raise ValueError(
                        f"checkpoint {self.checkpoint} is of another model: parameter {name!r} has "
                        f"shape {theirs.get(name)} there and {shape} here")
            raise ValueError(f"checkpoint {self.checkpoint} is of another model "
                             f"({len(theirs)} tensors there, {len(mine)} here)")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(tuple(state["rng"]))
        if self.extra_state and state["extra"] is not None:
            self.extra_state.load_state_dict(state["extra"])
        self.history = History(state["history"])
        self.start_epoch, self.start_batch, self.partial = state["epoch"], state["batch"], state["partial"]

    # ----------------------------------------------------------- loop
    def run(self):
        """Ctrl-C during a step is deferred to the end of that step (a SIGINT
        handler sets a flag), so the checkpoint always holds whole steps and
        resuming reproduces the uninterrupted run exactly."""
        import signal
        import threading

        stop = {"requested": False}
        previous = None
        if threading.current_thread() is threading.main_thread():
            def request_stop(signum, frame):
                stop["requested"] = True
            previous = signal.signal(signal.SIGINT, request_stop)
        try:
            return self._loop(stop)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def _loop(self, stop):
        model, loader = self.model, self.loader
        for epoch in range(self.start_epoch, self.epochs):
            model.train()
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch)
            skip = self.start_batch if epoch == self.start_epoch else 0
            sums = dict(self.partial) if (skip and self.partial) else {}
            progress = _Progress(self.progress, len(loader), f"{self.kind} epoch {epoch + 1}/{self.epochs}")
            started = time.perf_counter()
            seen = int(sums.get("_n", 0))
            processed = 0  # samples trained in this call, for images/s
            completed = skip  # batches of this epoch whose step has finished
            try:
                for batch_index, batch in enumerate(loader):
                    if batch_index < skip:
                        continue  # replaying a deterministic epoch up to the interruption
                    images, targets, indices = _unpack(batch)
                    loss, stats = self.step(images, np.asarray(targets), indices)
                    value = loss.item()
                    if not math.isfinite(value):
                        where = f"epoch {epoch + 1}, batch {batch_index + 1}"
                        kept = (f"; the last good checkpoint is {self.checkpoint}" if self.checkpoint
                                else "")
                        raise FloatingPointError(
                            f"training stopped: the loss became {value} at {where} (try a lower "
                            f"lr or gradient clipping){kept}")
                    self.optimizer.zero_grad()
                    loss.backward()
                    if self.grad_clip:
                        clip_grad_norm_(model.parameters(), self.grad_clip)
                    self.optimizer.step()
                    self.scheduler.step()
                    n = len(targets)
                    seen += n
                    processed += n
                    sums["_n"] = seen
                    sums["loss"] = sums.get("loss", 0.0) + value * n
                    for key, v in stats.items():
                        sums[key] = sums.get(key, 0.0) + float(v)
                    completed = batch_index + 1
                    shown = {"loss": sums["loss"] / seen, "acc": sums.get("correct", 0.0) / seen}
                    if "kept" in sums:
                        shown["skip"] = sums["kept"] / seen
                    shown["img/s"] = processed / max(time.perf_counter() - started, 1e-9)
                    shown["lr"] = self.optimizer.param_groups[0]["lr"]
                    progress.update(**shown)
                    if stop["requested"]:
                        raise KeyboardInterrupt
            except KeyboardInterrupt:
                where = self.checkpoint or "nowhere (no checkpoint path given)"
                progress.close(f"interrupted at epoch {epoch + 1} after {completed} batches; "
                               f"state saved to {where}")
                self._save(epoch, completed, sums)
                self.history.interrupted = True
                return self.history
            elapsed = time.perf_counter() - started
            record = {"epoch": epoch + 1, "loss": sums["loss"] / seen,
                      "lr": self.optimizer.param_groups[0]["lr"],
                      "images_per_s": processed / max(elapsed, 1e-9), "seconds": elapsed}
            record.update(self.epoch_end(sums, seen))
            if self.val_fn is not None:
                record.update(self.val_fn())
            self.history.append(record)
            self.partial, self.start_batch = None, 0
            self._save(epoch + 1, 0, None)
            if self.log:
                with open(self.log, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
            progress.close(f"[{self.kind}] epoch {epoch + 1}/{self.epochs} " + " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in record.items() if k != "epoch"))
        return self.history


def _common(kw):
    """Options shared by the trainers, with their defaults."""
    opts = dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True,
                schedule="cosine", warmup_epochs=0.0, grad_clip=None, checkpoint=None, log=None,
                progress=True, seed=0)
    unknown = set(kw) - set(opts) - {"label_smoothing", "resume", "val_loader"}
    if unknown:
        raise TypeError(f"unexpected option(s): {', '.join(sorted(unknown))}")
    opts.update({k: v for k, v in kw.items() if k in opts})
    return opts


def _trainer_options(opts):
    """The options the epoch loop takes; ``seed`` is only recorded in the
    checkpoint's config (shuffling and augmentation follow the loader's seed,
    initialisation and dropout the global generator, saved in checkpoints)."""
    return {k: v for k, v in opts.items() if k != "seed"}


def _validation(model, val_loader):
    if val_loader is None:
        return None

    def run():
        result = evaluate(model, val_loader)
        return {"val_" + k: v for k, v in result.items()}
    return run


# ----------------------------------------------------------------- fit
def fit(model, loader, epochs, *, label_smoothing=0.0, resume=False, val_loader=None, **kw):
    """Trains a single-head classifier with cross-entropy (the big cloud model
    or the plain small edge model). Returns the History of epoch records."""
    opts = _common(kw)
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")

    def step(images, targets, indices):
        logits = model(images)
        loss = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
        correct = int(np.sum(np.argmax(logits.detach().numpy(), axis=1) == targets))
        return loss, {"correct": correct}

    def epoch_end(sums, n):
        return {"accuracy": sums["correct"] / n}

    trainer = _Trainer(model, loader, epochs, kind="fit", step=step, epoch_end=epoch_end,
                       extra_state=None, config={"label_smoothing": label_smoothing, **_jsonable(opts)},
                       val_fn=_validation(model, val_loader), **_trainer_options(opts))
    if resume and opts["checkpoint"] and os.path.exists(opts["checkpoint"]):
        trainer.resume()
    return trainer.run()


# ------------------------------------------------------ AppealNet (Alg. 1)
def big_model_losses(big_model, images, targets, batch_size=256):
    """Per-sample cross-entropy of the big model over a whole array of
    (un-augmented) images, for the cached white-box option."""
    images = np.asarray(images, dtype=np.float32)
    targets = np.asarray(targets, dtype=np.int64)
    if len(images) != len(targets):
        raise ValueError(f"big_model_losses: {len(images)} images but {len(targets)} targets")
    out = np.empty(len(images), dtype=np.float32)
    big_model.eval()
    with no_grad():
        for start in range(0, len(images), batch_size):
            x = _C.tensor(images[start:start + batch_size])
            y = targets[start:start + batch_size]
            out[start:start + len(y)] = F.cross_entropy(big_model(x), y, reduction="none").numpy()
    return out


def train_appealnet(model, loader, epochs, *, big_model=None, big_losses=None, beta=1.0,
                    budget=None, adapt_beta=False, beta_step=0.5, beta_signal="log_q",
                    skip_threshold=0.5, label_smoothing=0.0, resume=False, val_loader=None, **kw):
    """Joint training of a two-head model (Algorithm 1) with appeal_loss.

    White-box (Eq. 9) when ``big_model`` is given — its per-sample losses
    are computed, without gradient, on the same augmented batch — or when
    ``big_losses`` (an array with one loss per training sample, from
    big_model_losses on the un-augmented images) is given: cheaper (the big
    model runs once, not every epoch) but the losses then describe the clean
    image, not the augmented view the small model sees, so q learns from a
    slightly mismatched signal.  Black-box (Eq. 10) when neither is given.

    beta: the weight of -log q.  budget=(c1, c0, b) instead derives the
    target skipping rate b_hat of Eq. (6); with adapt_beta=True beta then
    follows dual ascent (losses.BetaController) after every epoch so that
    the training data's skipping rate (q >= skip_threshold) meets b_hat.
    """
    opts = _common(kw)
    if big_model is not None and big_losses is not None:
        raise ValueError("give big_model or big_losses, not both")
    setting = "black-box" if big_model is None and big_losses is None else "white-box"
    if not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    target_rate = target_skipping_rate(*budget) if budget is not None else None
    if adapt_beta and target_rate is None:
        raise ValueError("adapt_beta needs budget=(c1, c0, b) to know the target skipping rate")
    controller = (BetaController(target_rate, beta=beta, step_size=beta_step, signal=beta_signal)
                  if adapt_beta else None)
    cached = None if big_losses is None else np.asarray(big_losses, dtype=np.float64)
    checked = {"classes": False}

    def current_beta():
        return controller.beta if controller else float(beta)

    def step(images, targets, indices):
        logits, q_logit = model(images)
        big = None
        if big_model is not None:
            big_model.eval()
            with no_grad():
                big_logits = big_model(images)
            if not checked["classes"]:
                if big_logits.shape[1] != logits.shape[1]:
                    raise ValueError(f"the big model predicts {big_logits.shape[1]} classes but the "
                                     f"small model {logits.shape[1]}")
                checked["classes"] = True
            big = F.cross_entropy(big_logits, targets, reduction="none").numpy()
        elif cached is not None:
            if indices is None:
                raise ValueError("cached big-model losses need a loader that yields sample indices")
            big = cached[np.asarray(indices)]
        loss = appeal_loss(logits, q_logit, targets, big_loss=big, beta=current_beta(),
                           label_smoothing=label_smoothing)
        q_np = q_logit.detach().numpy().astype(np.float64)
        log_q = -np.logaddexp(0.0, -q_np)  # log sigmoid, stable
        q = np.exp(log_q)
        pred = np.argmax(logits.detach().numpy(), axis=1)
        return loss, {"correct": int(np.sum(pred == targets)),
                      "kept": int(np.sum(q >= skip_threshold)),
                      "sum_log_q": float(np.sum(log_q)), "sum_q": float(np.sum(q))}

    def epoch_end(sums, n):
        record = {"accuracy": sums["correct"] / n, "skipping_rate": sums["kept"] / n,
                  "mean_q": sums["sum_q"] / n, "mean_log_q": sums["sum_log_q"] / n,
                  "beta": current_beta()}
        if target_rate is not None:
            record["target_skipping_rate"] = target_rate
        if controller:
            record["beta_next"] = controller.update(record["mean_log_q"], record["skipping_rate"])
        return record

    config = {"setting": setting, "beta": beta, "budget": list(budget) if budget else None,
              "adapt_beta": adapt_beta, "label_smoothing": label_smoothing, **_jsonable(opts)}
    trainer = _Trainer(model, loader, epochs, kind=f"appealnet-{setting}", step=step,
                       epoch_end=epoch_end, extra_state=controller, config=config,
                       val_fn=_validation(model, val_loader), **_trainer_options(opts))
    if resume and opts["checkpoint"] and os.path.exists(opts["checkpoint"]):
        trainer.resume()
    return trainer.run()


def _jsonable(opts):
    return {k: v for k, v in opts.items() if isinstance(v, (int, float, str, bool, type(None)))}


# ---------------------------------------------------------- inference
def predict(model, images, batch_size=256):
    """Eval-mode outputs over a numpy array of images (float32 N×C×H×W):
    logits [N, C] for a single-head model, (logits, q_logit [N]) for a
    two-head model, as numpy arrays."""
    images = np.asarray(images, dtype=np.float32)
    model.eval()
    logits, q = [], []
    with no_grad():
        for start in range(0, len(images), batch_size):
            out = model(_C.tensor(images[start:start + batch_size]))
            if isinstance(out, tuple):
                logits.append(out[0].numpy().copy())
                q.append(out[1].numpy().reshape(-1).copy())
            else:
                logits.append(out.numpy().copy())
    logits = np.concatenate(logits) if logits else np.zeros((0, 0), np.float32)
    return (logits, np.concatenate(q)) if q else logits


def evaluate(model, loader):
    """Accuracy (and, for a two-head model, mean q and skipping rate at 0.5)."""
    model.eval()
    n = correct = kept = 0
    sum_q, two_head = 0.0, False
    with no_grad():
        for batch in loader:
            images, targets, _ = _unpack(batch)
            targets = np.asarray(targets)
            out = model(images)
            logits = out[0] if isinstance(out, tuple) else out
            correct += int(np.sum(np.argmax(logits.numpy(), axis=1) == targets))
            if isinstance(out, tuple):
                two_head = True
                q = 1.0 / (1.0 + np.exp(-out[1].numpy().astype(np.float64).reshape(-1)))
                kept += int(np.sum(q >= 0.5))
                sum_q += float(q.sum())
            n += len(targets)
    result = {"accuracy": correct / max(n, 1)}
    if two_head:
        result.update({"skipping_rate": kept / n, "mean_q": sum_q / n})
    return result
