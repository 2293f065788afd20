"""Masked trainings: the only model fits of EcoVal (method spec section 3, "Batched training").

All ``M`` models of a stage see the same rows and differ only by a row mask, so they train
together as one tensor program: weights ``[M, d, K]``, a ``[M, n]`` mask, one full-batch
optimiser. Every masked model starts from the all-rows solution (a leave-cluster-out model is a
small perturbation of it), which is both faster and closer to the optimum than a cold start.

Two batched learners satisfy :class:`~ecoval_ops.valuation.protocols.Learner`:

- :class:`SoftmaxRegression`: multinomial logistic regression with scikit-learn's L2 penalty
  (``sum_i CE_i + ||W||^2 / (2C)``), batched L-BFGS (:mod:`.lbfgs`) with a strong-Wolfe line
  search;
- :class:`MLPClassifier`: one hidden ReLU layer, batched full-batch Adam with early stop.

Any scikit-learn classifier serves too, one model at a time (:mod:`.learners`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from ecoval_ops.valuation.lbfgs import LbfgsMemory, batched_lbfgs

if TYPE_CHECKING:
    import torch

__all__ = ["DeviceName", "MLPClassifier", "SoftmaxRegression", "resolve_device"]

DeviceName = Literal["auto", "cpu", "cuda"]
Precision = Literal["float32", "float64"]

_Params = list["torch.Tensor"]


def resolve_device(device: str) -> str:
    """Return ``"cuda"`` or ``"cpu"``; ``"auto"`` picks CUDA when torch sees a GPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but torch sees no CUDA device")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; expected 'auto', 'cpu' or 'cuda'")
    return device


class _BatchedTorchLearner:
    """Shared machinery of the batched torch learners: chunking, warm start, prediction.

    Subclasses define the parameter shapes, the forward pass and the optimiser.
    """

    C: float
    device: str
    precision: Precision | None
    batch_size: int | None
    one_by_one: bool

    def predict_proba_masked(
        self,
        X: NDArray[np.float64],
        y: NDArray[np.int64],
        masks: NDArray[np.bool_],
        X_val: NDArray[np.float64],
        *,
        n_classes: int,
        seed: int,
    ) -> NDArray[np.float64]:
        """Train one model per mask row and predict class probabilities on ``X_val``.

        Args:
            X: ``(n, d)`` training features.
            y: ``(n,)`` class codes in ``0..n_classes-1``.
            masks: ``(M, n)`` boolean; row ``r`` selects the training rows of model ``r``.
            X_val: ``(m, d)`` rows to predict.
            n_classes: K.
            seed: seeds the initialisation (common random numbers across the M models).

        Returns:
            ``(M, m, K)`` float64 probabilities.
        """
        import torch

        device = resolve_device(self.device)
        precision = self.precision or ("float64" if device == "cpu" else "float32")
        dtype = torch.float64 if precision == "float64" else torch.float32
        Xt = torch.as_tensor(X, dtype=dtype, device=device)
        yt = torch.as_tensor(y, dtype=torch.long, device=device)
        Xv = torch.as_tensor(X_val, dtype=dtype, device=device)
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        init = [p.to(device=device, dtype=dtype) for p in self._init(X.shape[1], n_classes, gen)]
        all_rows = torch.ones((1, X.shape[0]), dtype=dtype, device=device)
        full, memory = self._fit(Xt, yt, all_rows, init, None)
        out = np.empty((masks.shape[0], X_val.shape[0], n_classes), dtype=np.float64)
        full_rows = masks.all(axis=1)
        with torch.no_grad():
            out[full_rows] = self._proba(full, Xv).cpu().numpy()[0]
        todo = np.flatnonzero(~full_rows)
        for chunk in self._chunks(todo, X.shape[0], n_classes):
            mask_t = torch.as_tensor(masks[chunk], dtype=dtype, device=device)
            start = [p.expand(len(chunk), *p.shape[1:]).clone() for p in full]
            params, _ = self._fit(Xt, yt, mask_t, start, memory)
            with torch.no_grad():
                out[chunk] = self._proba(params, Xv).cpu().numpy()
        return out

    def _chunks(self, todo: NDArray[np.intp], n: int, k: int) -> Iterator[NDArray[np.intp]]:
        if self.one_by_one:
            size = 1
        elif self.batch_size is not None:
            size = self.batch_size
        else:
            # Bounds the [M, n, K] logits and their autograd buffers to about 1 GiB in float64.
            size = max(1, (1 << 24) // max(1, n * k))
        for start in range(0, todo.size, size):
            yield todo[start : start + size]

    def _loss(self, params: _Params, X: torch.Tensor, y: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Sum over models of ``(sum_i mask_i CE_i + ||W||^2 / (2C)) / n_model``."""
        import torch

        logits = self._logits(params, X)
        ce = torch.logsumexp(logits, dim=2) - logits.gather(2, y.expand(logits.shape[0], -1).unsqueeze(2)).squeeze(2)
        counts = masks.sum(dim=1).clamp_min(1.0)
        penalty = sum(((w**2).flatten(1).sum(dim=1) for w in params[::2]), torch.zeros_like(counts))
        return (((ce * masks).sum(dim=1) + penalty / (2.0 * self.C)) / counts).sum()

    def _proba(self, params: _Params, X: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.softmax(self._logits(params, X), dim=2)

    def _init(self, d: int, k: int, gen: torch.Generator) -> _Params:
        raise NotImplementedError

    def _logits(self, params: _Params, X: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _fit(
        self, X: torch.Tensor, y: torch.Tensor, masks: torch.Tensor, start: _Params, memory: Any
    ) -> tuple[_Params, Any]:
        """Train from ``start``; ``memory`` is what the all-rows fit returned (None for it)."""
        raise NotImplementedError


class SoftmaxRegression(_BatchedTorchLearner):
    """Multinomial logistic regression, all masked models trained at once by batched L-BFGS.

    The objective of model m is scikit-learn's ``sum_i CE_i + ||W_m||^2 / (2C)`` over its rows
    (bias not penalised), divided by its row count for conditioning. Each model keeps its own
    L-BFGS history, step length and stopping test (:func:`batched_lbfgs`), so a model's
    optimum does not depend on which other models share its batch. The logits of all models
    are one GEMM ``X [n, d] @ W [d, M*K]`` and the gradient is analytic (no autograd).

    Args:
        C: inverse L2 strength, as in ``sklearn.linear_model.LogisticRegression``. Default 1.0.
        max_iter: L-BFGS iterations per model. Default 500.
        tol: a model stops when its largest gradient entry is below this. Default 1e-5: on
            mnist_5k (PCA 64, 2000 rows) the leave-cluster-out differences are then within
            7e-4 of a 1e-10 solve, under a tenth of their smallest standard error.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``. Default ``"auto"``.
        precision: ``"float32"`` or ``"float64"``; ``None`` = float64 on CPU, float32 on CUDA.
        batch_size: models per batch; ``None`` sizes batches to about 1 GiB of logits.
        one_by_one: train the masked models one at a time (the slow path, for benchmarks).
    """

    def __init__(
        self,
        *,
        C: float = 1.0,
        max_iter: int = 500,
        tol: float = 1e-5,
        device: DeviceName = "auto",
        precision: Precision | None = None,
        batch_size: int | None = None,
        one_by_one: bool = False,
    ) -> None:
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self.one_by_one = one_by_one

    def _init(self, d: int, k: int, gen: torch.Generator) -> _Params:
        import torch

        return [torch.zeros((1, d, k), dtype=torch.float64), torch.zeros((1, k), dtype=torch.float64)]

    def _logits(self, params: _Params, X: torch.Tensor) -> torch.Tensor:
        W, b = params
        M, d, K = W.shape
        flat = X.matmul(W.permute(1, 0, 2).reshape(d, M * K)) + b.reshape(1, M * K)
        return flat.reshape(X.shape[0], M, K).permute(1, 0, 2)

    def _fit(
        self, X: torch.Tensor, y: torch.Tensor, masks: torch.Tensor, start: _Params, memory: Any
    ) -> tuple[_Params, LbfgsMemory]:
        import torch

        M, d, K = start[0].shape
        n = X.shape[0]
        rows = torch.arange(n, device=X.device)
        weight = (masks / masks.sum(dim=1, keepdim=True).clamp_min(1.0)).T.contiguous()
        ridge = 1.0 / (self.C * masks.sum(dim=1).clamp_min(1.0))

        def objective(x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            # The [n, m, K] tensors dominate the cost by memory traffic, so they are updated
            # in place: logits -> probabilities -> weighted residuals in one buffer.
            m = idx.shape[0]
            W = x[:, : d * K].reshape(m, d, K)
            b = x[:, d * K :]
            w = weight[:, idx]
            buf = X.matmul(W.permute(1, 0, 2).reshape(d, m * K)).add_(b.reshape(1, m * K)).reshape(n, m, K)
            lse = torch.logsumexp(buf, dim=2)
            true_logit = buf[rows, :, y]
            f = ((lse - true_logit) * w).sum(dim=0) + 0.5 * ridge[idx] * (W**2).sum(dim=(1, 2))
            buf.sub_(lse.unsqueeze(2)).exp_().mul_(w.unsqueeze(2))
            buf[rows, :, y] -= w
            gW = X.T.matmul(buf.reshape(n, m * K)).reshape(d, m, K).permute(1, 0, 2) + ridge[idx, None, None] * W
            return f, torch.cat([gW.reshape(m, d * K), buf.sum(dim=0)], dim=1)

        def hessian_diagonal(x: torch.Tensor) -> torch.Tensor:
            W = x[:, : d * K].reshape(M, d, K)
            logits = (X.matmul(W.permute(1, 0, 2).reshape(d, M * K)) + x[:, d * K :].reshape(1, M * K)).reshape(n, M, K)
            prob = torch.softmax(logits, dim=2)
            curv = prob * (1.0 - prob) * weight.unsqueeze(2)
            dW = (X**2).T.matmul(curv.reshape(n, M * K)).reshape(d, M, K).permute(1, 0, 2) + ridge[:, None, None]
            return torch.cat([dW.reshape(M, d * K), curv.sum(dim=0) + ridge[:, None]], dim=1)

        tol = self.tol
        x0 = torch.cat([start[0].reshape(M, d * K), start[1]], dim=1)
        x, memory = batched_lbfgs(
            objective,
            x0,
            tol=tol,
            max_iter=self.max_iter,
            memory=memory,
            inverse_diagonal=1.0 / hessian_diagonal(x0),
        )
        return [x[:, : d * K].reshape(M, d, K), x[:, d * K :]], memory


class MLPClassifier(_BatchedTorchLearner):
    """One hidden ReLU layer, all masked models trained at once by full-batch Adam.

    Args:
        hidden: hidden units. Default 64.
        C: inverse L2 strength on both weight matrices (scikit-learn's convention). Default 1.0.
        steps: Adam steps at most per batch (warm-started masked models stop early). Default 300.
        lr: Adam learning rate. Default 0.01.
        tol: early stop once the relative loss change of a step is below this. Default 1e-7.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``. Default ``"auto"``.
        precision: ``"float32"`` or ``"float64"``; ``None`` = float64 on CPU, float32 on CUDA.
        batch_size: models per batch; ``None`` sizes batches automatically.
        one_by_one: train the masked models one at a time (for benchmarks).
    """

    def __init__(
        self,
        *,
        hidden: int = 64,
        C: float = 1.0,
        steps: int = 300,
        lr: float = 0.01,
        tol: float = 1e-7,
        device: DeviceName = "auto",
        precision: Precision | None = None,
        batch_size: int | None = None,
        one_by_one: bool = False,
    ) -> None:
        self.hidden = hidden
        self.C = C
        self.steps = steps
        self.lr = lr
        self.tol = tol
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self.one_by_one = one_by_one

    def _init(self, d: int, k: int, gen: torch.Generator) -> _Params:
        import torch

        def uniform(shape: tuple[int, ...], fan_in: int) -> torch.Tensor:
            bound = 1.0 / math.sqrt(fan_in)
            return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound

        h = self.hidden
        return [uniform((1, d, h), d), uniform((1, h), d), uniform((1, h, k), h), uniform((1, k), h)]

    def _logits(self, params: _Params, X: torch.Tensor) -> torch.Tensor:
        import torch

        W1, b1, W2, b2 = params
        hidden = torch.relu(X.matmul(W1) + b1.unsqueeze(1))
        return hidden.matmul(W2) + b2.unsqueeze(1)

    def _fit(
        self, X: torch.Tensor, y: torch.Tensor, masks: torch.Tensor, start: _Params, memory: Any
    ) -> tuple[_Params, None]:
        import torch

        params = [p.detach().clone().requires_grad_(True) for p in start]
        opt = torch.optim.Adam(params, lr=self.lr)
        previous = math.inf
        for _ in range(self.steps):
            opt.zero_grad()
            loss = self._loss(params, X, y, masks)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            value = float(loss.detach())
            if abs(previous - value) <= self.tol * max(1.0, abs(value)):
                break
            previous = value
        return [p.detach() for p in params], None
