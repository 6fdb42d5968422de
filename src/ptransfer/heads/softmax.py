"""Per-residue probe: a linear softmax classifier trained by minibatch AdamW in torch.

Built for millions of residues x up to 1280 features: ``X`` stays in the caller's dtype
(float16 is fine) and each minibatch is gathered, cast to float32 and standardised on the
fly, so no full float32 copy is ever made. Rows labelled ``IGNORE`` (-1) are skipped (their
count is logged).

One linear head per weight decay is trained jointly on the same minibatches (the data
pass, the expensive part, is shared; the heads' parameters and losses are independent).
Each head stops early on its own validation loss (``patience`` epochs without a new
minimum) and is restored to its best epoch; the weight decay whose restored head has the
best validation accuracy is kept (ties -> larger weight decay). Weights start at zero (the
problem is convex) and the epoch order comes from ``seed``, so two fits are identical.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from ptransfer.heads.inputs import check_features, check_labels, first_bad_row, resolve_n_classes
from ptransfer.heads.selection import check_grid, select_best
from ptransfer.heads.standardize import chunk_rows, fit_standardizer

log = logging.getLogger(__name__)

DEFAULT_WEIGHT_DECAYS: tuple[float, ...] = (0.0, 1e-3, 1e-2, 1e-1)


class _HeadBank:
    """K linear heads D -> C (one per weight decay), evaluated with one matrix product."""

    def __init__(self, n_heads: int, n_features: int, n_classes: int, device: torch.device):
        self.shape = (n_heads, n_classes)
        self.weights = [torch.zeros(n_features, n_classes, device=device, requires_grad=True)
                        for _ in range(n_heads)]
        self.biases = [torch.zeros(n_classes, device=device, requires_grad=True)
                       for _ in range(n_heads)]

    def optimizer(self, weight_decays: np.ndarray, lr: float) -> torch.optim.Optimizer:
        groups = [{"params": [w], "weight_decay": float(wd)}
                  for w, wd in zip(self.weights, weight_decays)]
        groups.append({"params": self.biases, "weight_decay": 0.0})  # biases are not decayed
        return torch.optim.AdamW(groups, lr=lr)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """B x D standardised features -> B x K x C logits."""
        stacked = features @ torch.cat(self.weights, dim=1) + torch.cat(self.biases)
        return stacked.view(features.shape[0], *self.shape)

    def snapshot(self, head: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.weights[head].detach().clone(), self.biases[head].detach().clone()


class SoftmaxProbe(BaseEstimator):
    """Linear softmax (multinomial logistic) probe, minibatch AdamW, early stopping.

    After ``fit``: ``classes_``, ``weight_`` (D x C) and ``bias_`` (C) on standardised
    features, ``mean_`` / ``scale_`` (D), ``weight_decay_``, ``best_epoch_`` (1-based epoch
    whose weights were restored), ``val_losses_`` / ``val_accuracies_`` ({weight decay:
    per-epoch list}), ``val_scores_`` ({weight decay: accuracy at its best epoch}),
    ``n_epochs_`` (epochs run), ``n_ignored_`` (training rows labelled -1).
    """

    # How ``heads.cross_validation`` reaches the grid: the parameter that holds it, and the
    # tie rule of ``select_best`` (True: the larger value, the more regularised model).
    grid_param = "weight_decays"
    prefer_larger = True
    selection_metric = "accuracy"  # the validation score every weight decay is chosen by

    def __init__(
        self,
        weight_decays=DEFAULT_WEIGHT_DECAYS,
        lr: float = 1e-3,
        batch_size: int = 4096,
        max_epochs: int = 20,
        patience: int = 2,
        n_classes: int | None = None,
        seed: int = 0,
        device: str = "cpu",
    ):
        self.weight_decays = weight_decays
        self.lr = lr
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.n_classes = n_classes
        self.seed = seed
        self.device = device

    # ------------------------------------------------------------------ fitting

    def fit(self, X, y, X_val, y_val, n_classes: int | None = None) -> SoftmaxProbe:
        """Fit on ``X`` (N x D, any float dtype), ``y`` (N, class index or -1); early-stop
        and choose the weight decay on ``X_val`` (M x D), ``y_val`` (M)."""
        weight_decays = check_grid(self.weight_decays, "weight_decays", "SoftmaxProbe", positive=False)
        self._check_settings()
        device = _torch_device(self.device)
        given = n_classes if n_classes is not None else self.n_classes
        X = check_features(X, "X", finite=False)  # scanned chunk by chunk below
        X_val = check_features(X_val, "X_val", n_features=X.shape[1])
        y = check_labels(y, X.shape[0], "y", given, allow_ignore=True)
        y_val = check_labels(y_val, X_val.shape[0], "y_val", given, allow_ignore=True)
        train_rows, val_rows = np.flatnonzero(y >= 0), np.flatnonzero(y_val >= 0)
        if train_rows.size == 0 or val_rows.size == 0:
            raise ValueError("SoftmaxProbe: y or y_val has no labelled rows (all are -1)")
        self.n_ignored_ = int(y.size - train_rows.size)
        if self.n_ignored_:
            log.info("SoftmaxProbe: ignoring %d training rows labelled -1", self.n_ignored_)
        self.classes_ = np.arange(resolve_n_classes(y, y_val, given=given, owner="SoftmaxProbe"))
        standardizer = fit_standardizer(X, rows=train_rows, name="X")
        self.mean_, self.scale_ = standardizer.mean, standardizer.scale
        self.n_features_in_ = X.shape[1]

        bank = _HeadBank(weight_decays.size, X.shape[1], self.classes_.size, device)
        best_states = self._train(bank, weight_decays, (X, y, train_rows), (X_val, y_val, val_rows))
        self.val_scores_ = {float(wd): self._best_accuracy(float(wd)) for wd in weight_decays}
        chosen = select_best(weight_decays, list(self.val_scores_.values()), "accuracy", True)
        self.weight_decay_ = float(weight_decays[chosen])
        self.best_epoch_ = self.best_epochs_[self.weight_decay_]
        weight, bias = best_states[chosen]
        self.weight_, self.bias_ = weight.cpu().numpy(), bias.cpu().numpy()
        return self

    def _train(self, bank: _HeadBank, weight_decays: np.ndarray, train, val) -> list:
        """Epoch loop with per-head early stopping; returns each head's best (weight, bias)."""
        X, y, rows = train
        n_heads = weight_decays.size
        scaler = _TorchScaler(self.mean_, self.scale_, bank.weights[0].device)
        optimizer = bank.optimizer(weight_decays, self.lr)
        rng = np.random.default_rng(self.seed)
        labels = torch.as_tensor(y)
        best_loss = np.full(n_heads, np.inf)
        best_states = [bank.snapshot(k) for k in range(n_heads)]
        since_best = np.zeros(n_heads, dtype=int)
        history = {"loss": [[] for _ in range(n_heads)], "accuracy": [[] for _ in range(n_heads)]}
        self.best_epochs_ = {float(wd): 0 for wd in weight_decays}
        for epoch in range(1, self.max_epochs + 1):
            active = torch.as_tensor(since_best < self.patience, dtype=torch.float32,
                                     device=scaler.device)
            order = rng.permutation(rows)
            for start in range(0, order.size, self.batch_size):
                batch = np.sort(order[start : start + self.batch_size])  # sorted: memory locality
                logits = bank.logits(scaler(X[batch]))  # B x K x C
                targets = labels[batch].to(scaler.device)[:, None].expand(-1, n_heads)
                per_head = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
                optimizer.zero_grad(set_to_none=True)
                (per_head.mean(dim=0) * active).sum().backward()
                optimizer.step()
            val_loss, val_accuracy = _evaluate(bank, scaler, *val)
            for k, wd in enumerate(weight_decays):
                if since_best[k] >= self.patience:
                    continue  # stopped earlier; its later epochs are not recorded
                history["loss"][k].append(float(val_loss[k]))
                history["accuracy"][k].append(float(val_accuracy[k]))
                if val_loss[k] < best_loss[k]:
                    best_loss[k], since_best[k] = val_loss[k], 0
                    best_states[k] = bank.snapshot(k)
                    self.best_epochs_[float(wd)] = epoch
                else:
                    since_best[k] += 1
            self.n_epochs_ = epoch
            if np.all(since_best >= self.patience):
                break
        self.val_losses_ = {float(wd): history["loss"][k] for k, wd in enumerate(weight_decays)}
        self.val_accuracies_ = {float(wd): history["accuracy"][k] for k, wd in enumerate(weight_decays)}
        return best_states

    def _best_accuracy(self, weight_decay: float) -> float:
        """Validation accuracy at the best epoch; nan when no epoch had a finite loss."""
        epoch = self.best_epochs_[weight_decay]
        if epoch == 0:
            log.warning("SoftmaxProbe: weight decay %g never reached a finite validation loss "
                        "(diverged? lower lr)", weight_decay)
            return float("nan")
        return self.val_accuracies_[weight_decay][epoch - 1]

    def _check_settings(self) -> None:
        for name in ("batch_size", "max_epochs", "patience"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"SoftmaxProbe: {name} must be a positive integer, got {value!r}")
        if not np.isfinite(self.lr) or self.lr <= 0:
            raise ValueError(f"SoftmaxProbe: lr must be positive, got {self.lr!r}")

    # ------------------------------------------------------------------ prediction

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities of ``X`` (N x D, any float dtype): N x C float64."""
        if not hasattr(self, "weight_"):
            raise NotFittedError("SoftmaxProbe is not fitted yet: call fit(X, y, X_val, y_val) first")
        X = check_features(X, "X", n_features=self.n_features_in_, finite=False)
        weight = torch.as_tensor(self.weight_, dtype=torch.float64)
        bias = torch.as_tensor(self.bias_, dtype=torch.float64)
        out = np.empty((X.shape[0], self.classes_.size))
        step = chunk_rows(X.shape[1])
        for start in range(0, X.shape[0], step):
            rows = np.asarray(X[start : start + step], dtype=np.float64)
            first_bad_row(rows, "X", row_offset=start)
            chunk = torch.as_tensor(rows)
            features = (chunk - torch.as_tensor(self.mean_)) / torch.as_tensor(self.scale_)
            out[start : start + step] = torch.softmax(features @ weight + bias, dim=1).numpy()
        return out

    def predict(self, X) -> np.ndarray:
        """Most probable class index of each row: N."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    @property
    def selected_params_(self) -> dict:
        if not hasattr(self, "weight_decay_"):
            raise NotFittedError("SoftmaxProbe is not fitted yet")
        return {"weight_decay": self.weight_decay_, "epochs": self.best_epoch_}


class _TorchScaler:
    """Rows of X (any dtype, numpy) -> standardised float32 tensor on the heads' device."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, device: torch.device):
        self.device = device
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device)
        self.inv_scale = torch.as_tensor(1.0 / scale, dtype=torch.float32, device=device)

    def __call__(self, rows: np.ndarray) -> torch.Tensor:
        # Transfer in the stored dtype (float16 halves the copy), cast on the device.
        tensor = torch.as_tensor(np.ascontiguousarray(rows)).to(self.device)
        return (tensor.to(torch.float32) - self.mean) * self.inv_scale


@torch.no_grad()
def _evaluate(bank: _HeadBank, scaler: _TorchScaler, X, y, rows) -> tuple[np.ndarray, np.ndarray]:
    """Mean cross-entropy and accuracy of every head over ``X[rows]``: (K, K)."""
    n_heads = bank.shape[0]
    loss_sum = torch.zeros(n_heads, dtype=torch.float64, device=scaler.device)
    correct = torch.zeros(n_heads, dtype=torch.float64, device=scaler.device)
    step = chunk_rows(X.shape[1])
    for start in range(0, rows.size, step):
        selected = rows[start : start + step]
        logits = bank.logits(scaler(X[selected]))  # B x K x C
        targets = torch.as_tensor(y[selected], device=scaler.device)[:, None].expand(-1, n_heads)
        loss = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        loss_sum += loss.sum(dim=0).double()
        correct += (logits.argmax(dim=2) == targets).sum(dim=0).double()
    return (loss_sum / rows.size).cpu().numpy(), (correct / rows.size).cpu().numpy()


def _torch_device(device: str) -> torch.device:
    """``device`` as a torch device; a CUDA request without CUDA is a clear error."""
    try:
        parsed = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"SoftmaxProbe: device {device!r} is not a torch device") from error
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"SoftmaxProbe: device={device!r} but CUDA is not available here")
    return parsed
