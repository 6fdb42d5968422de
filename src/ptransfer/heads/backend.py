"""Array backend of the closed-form solvers: numpy on CPU, torch float64 on CUDA.

The ridge solvers are a handful of dense float64 operations (Gram matrix, symmetric
eigendecomposition, matrix products). On CPU they run in numpy (LAPACK ``syevd``); with
``device="cuda"`` the same code runs on torch float64 tensors. Arrays cross the boundary
only through ``asarray`` and ``to_numpy``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from threadpoolctl import threadpool_limits


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block's CPU arithmetic (numpy/scipy BLAS and LAPACK, OpenMP, torch) on one
    thread, restoring the caller's thread counts after.

    Why: OpenBLAS splits a product's or an eigendecomposition's sums differently for another
    thread count, so a probe's numbers moved in the 11th digit with the process that fitted
    it (a sweep's workers get ``cores / jobs`` threads: the same cell gave other rows with
    another shard count). On one thread the summation order is fixed by the data alone.
    """
    torch_threads = torch.get_num_threads()
    with threadpool_limits(limits=1):
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(torch_threads)


class ArrayBackend:
    """The operations the solvers need, on ``device`` (``"cpu"`` or ``"cuda[:i]"``)."""

    def __init__(self, device: str = "cpu", owner: str = "head"):
        device = str(device)
        if device == "cpu":
            self.device = None
        elif device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise ValueError(f"{owner}: device={device!r} but CUDA is not available here")
            self.device = torch.device(device)
        else:
            raise ValueError(f"{owner}: device must be 'cpu' or 'cuda[:i]', got {device!r}")

    @property
    def is_torch(self) -> bool:
        return self.device is not None

    def asarray(self, array) -> np.ndarray | torch.Tensor:
        """``array`` as float64 on the backend's device (cast after the transfer, so a
        float16 chunk crosses PCIe at half the size)."""
        if not self.is_torch:
            return np.asarray(array, dtype=np.float64)
        tensor = torch.as_tensor(np.asarray(array)) if not torch.is_tensor(array) else array
        return tensor.to(self.device).to(torch.float64)

    def to_numpy(self, array) -> np.ndarray:
        if torch.is_tensor(array):
            return array.detach().cpu().numpy()
        return np.asarray(array)

    def zeros(self, *shape: int):
        if self.is_torch:
            return torch.zeros(shape, dtype=torch.float64, device=self.device)
        return np.zeros(shape, dtype=np.float64)

    def one_hot(self, labels: np.ndarray, n_classes: int):
        """0/1 float64 coding of integer ``labels`` (N): N x n_classes."""
        if self.is_torch:
            index = torch.as_tensor(labels, device=self.device)
            return torch.nn.functional.one_hot(index, n_classes).to(torch.float64)
        return np.eye(n_classes)[labels]

    def column_range(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """Per-column minimum and maximum of ``rows`` (N x D), as numpy arrays (D each)."""
        if self.is_torch:
            low, high = torch.aminmax(rows, dim=0)
            return low.cpu().numpy(), high.cpu().numpy()
        return rows.min(axis=0), rows.max(axis=0)

    def eigh(self, symmetric):
        """Eigenvalues (r, ascending) and eigenvectors (n x r, columns) of a symmetric matrix."""
        if self.is_torch:
            return torch.linalg.eigh(symmetric)
        return np.linalg.eigh(symmetric)

    def add_gram(self, accumulator, rows) -> None:
        """``accumulator += rows.T @ rows`` in place (D x D += (N x D)^T (N x D))."""
        accumulator += rows.T @ rows

    def gram(self, rows):
        """``rows.T @ rows`` (D x D); ``eigh`` reads one triangle, so rounding asymmetry is moot."""
        return rows.T @ rows
