"""Benchmark: all-layer RidgeProbe vs a scikit-learn per-alpha Ridge loop.

Random features shaped like a 34-layer x 1280-dim embedding of FLIP GB1 ``sampled``
(train 6,289, val 699). Every layer carries the same low-rank signal with a layer-dependent
signal-to-noise ratio (best in the middle layers, as in protein language models), so the
alpha chosen on validation differs across layers. For each layer:

  (a) ``RidgeProbe(alphas).fit(X, y, X_val, y_val)``: one eigendecomposition, every alpha;
  (b) scikit-learn: ``StandardScaler`` on train, then ``Ridge(alpha).fit`` per alpha,
      Spearman on validation, the same selection rule (``select_best``, ties -> larger alpha).

Both sides include standardisation; feature generation is not timed.

    python scripts/bench_heads.py                 # 34 layers, as the model
    python scripts/bench_heads.py --layers 3      # quick run
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import sklearn
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_info, threadpool_limits

from ptransfer.heads import DEFAULT_ALPHAS, RidgeProbe, select_best
from ptransfer.metrics import spearman


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=34, help="layers to fit (default 34)")
    parser.add_argument("--dim", type=int, default=1280, help="features per layer (default 1280)")
    parser.add_argument("--n-train", type=int, default=6289)
    parser.add_argument("--n-val", type=int, default=699)
    parser.add_argument("--rank", type=int, default=256, help="rank of the shared signal")
    parser.add_argument("--alphas-per-decade", type=int, default=None,
                        help="log grid 1e-3..1e4 with this many values per decade "
                             "(default: ptransfer.heads.DEFAULT_ALPHAS, 2 per decade)")
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS threads for both sides (default: the library's own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="RidgeProbe device (cpu or cuda)")
    return parser.parse_args()


def make_latent(n_rows: int, rank: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Shared latent factors (n_rows x rank, variance of factor k ~ 1/k) and the target (n_rows)."""
    latent = rng.normal(size=(n_rows, rank)) / np.sqrt(np.arange(1, rank + 1))
    target = latent @ rng.normal(size=rank) + 0.3 * rng.normal(size=n_rows)
    return latent, target


def make_layer(latent: np.ndarray, layer: int, n_layers: int, dim: int, seed: int) -> np.ndarray:
    """Features of one layer, n_rows x dim float32: the latent factors in a random orthonormal
    embedding plus isotropic noise, with per-feature offsets and scales.

    The noise is lowest at 60 % of the depth and grows 100-fold towards either end, so the
    weak factors sink below the noise floor at different depths and the best ridge penalty
    moves from layer to layer (about 1e2 .. 1e4 with the default sizes).
    """
    rng = np.random.default_rng([seed, layer])
    depth = layer / max(1, n_layers - 1)
    noise = 0.003 * 100.0 ** (abs(depth - 0.6) / 0.6)
    embedding = np.linalg.qr(rng.normal(size=(dim, latent.shape[1])))[0].T  # rank x dim
    X = latent @ embedding + noise * rng.normal(size=(latent.shape[0], dim))
    X = X * rng.uniform(0.5, 2.0, size=dim) + rng.normal(size=dim)  # undone by standardisation
    return X.astype(np.float32)


def sklearn_loop(X, y, X_val, y_val, alphas) -> tuple[float, np.ndarray]:
    """Chosen alpha and its validation predictions, the scikit-learn way."""
    # float64 before scaling (a float32 input would be scaled in float32), as RidgeProbe does.
    X, X_val = X.astype(np.float64), X_val.astype(np.float64)
    scaler = StandardScaler().fit(X)
    Z, Z_val = scaler.transform(X), scaler.transform(X_val)
    scores, predictions = [], []
    for alpha in alphas:
        prediction = Ridge(alpha=alpha).fit(Z, y).predict(Z_val)
        scores.append(spearman(y_val, prediction))
        predictions.append(prediction)
    best = select_best(alphas, scores, "spearman", prefer_larger=True)
    return float(alphas[best]), predictions[best]


def main() -> None:
    args = parse_args()
    with threadpool_limits(args.threads):
        run(args)


def run(args: argparse.Namespace) -> None:
    if args.alphas_per_decade:
        alphas = np.logspace(-3, 4, 7 * args.alphas_per_decade + 1)
    else:
        alphas = np.asarray(DEFAULT_ALPHAS)
    n_total = args.n_train + args.n_val
    latent, y = make_latent(n_total, args.rank, np.random.default_rng(args.seed))
    train, val = slice(0, args.n_train), slice(args.n_train, n_total)
    print(f"{args.layers} layers x {args.dim} dims, train {args.n_train}, val {args.n_val}, "
          f"{alphas.size} alphas {alphas[0]:g}..{alphas[-1]:g}; numpy {np.__version__}, "
          f"scikit-learn {sklearn.__version__}, {platform.machine()}, "
          f"BLAS threads {threadpool_info()[0]['num_threads'] if threadpool_info() else '?'}")
    print(f"{'layer':>5} {'ours_s':>8} {'sklearn_s':>9} {'alpha_ours':>10} {'alpha_skl':>10} "
          f"{'agree':>5} {'max_rel_diff':>12}")
    totals, agree, chosen = np.zeros(2), [], []
    for layer in range(args.layers):
        X = make_layer(latent, layer, args.layers, args.dim, args.seed)
        start = time.perf_counter()
        probe = RidgeProbe(alphas=tuple(alphas), device=args.device).fit(X[train], y[train], X[val], y[val])
        ours = probe.predict(X[val])
        middle = time.perf_counter()
        alpha_sklearn, theirs = sklearn_loop(X[train], y[train], X[val], y[val], alphas)
        end = time.perf_counter()
        totals += (middle - start, end - middle)
        agree.append(probe.alpha_ == alpha_sklearn)
        chosen.append(probe.alpha_)
        rel_diff = np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)) if agree[-1] else np.nan
        print(f"{layer:>5} {middle - start:>8.2f} {end - middle:>9.2f} {probe.alpha_:>10.3g} "
              f"{alpha_sklearn:>10.3g} {str(agree[-1]):>5} {rel_diff:>12.2e}", flush=True)
    print(f"\nRidgeProbe total {totals[0]:.1f} s ({totals[0] / args.layers:.2f} s/layer); "
          f"sklearn loop total {totals[1]:.1f} s ({totals[1] / args.layers:.2f} s/layer); "
          f"speed-up {totals[1] / totals[0]:.1f}x")
    print(f"chosen alphas agree on {sum(agree)}/{len(agree)} layers; "
          f"distinct alphas chosen: {sorted({float(f'{a:.3g}') for a in chosen})}")


if __name__ == "__main__":
    main()
