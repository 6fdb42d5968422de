"""How much accelerator memory and time a fine-tune needs, before anything is loaded.

Pure arithmetic (no torch), for ``ptransfer plan`` and the cell's refusal of a fine-tune that
cannot fit. Memory (bytes) is the sum of:

- weights: every parameter in float32 (autocast keeps float32 master weights), 4 B each;
- training state: per trained parameter its gradient (4 B) and AdamW's two moments (8 B);
  LoRA trains ``lora_parameters`` (r x (d_in + d_out) per adapted projection, four per
  block), full fine-tuning every parameter;
- activations kept for the backward pass, per token of the largest batch
  (``toks_per_batch``) and per block: ``ACTIVATION_FACTOR`` x D values, in 2 B (bf16
  autocast) or 4 B (fp32) each; with gradient checkpointing only each block's input (D
  values) plus one block's full set. The factor is measured: the tensors autograd saves
  (``torch.autograd.graph.saved_tensors_hooks``) when AntiBERTy (BERT, 8 blocks of 512) trains
  on a 976-token batch in fp32 on the CPU come to 24.1 D values per token per block under
  full fine-tuning and 24.5 under LoRA (attention probabilities and dropout included; 1.4
  with gradient checkpointing), the order of Korthikanti et al. 2022's 34 D bytes per token
  per layer in 16-bit. Allocator caching and the backward pass's transient buffers come on
  top (``scripts/bench_finetune.py`` prints both; docs/benchmarks.md).

Time is in floating-point operations at a planning rate: a training token costs 6 x params
(forward 2, backward 4) under full fine-tuning and 4 x params under LoRA (no weight
gradients of the frozen base), an evaluated token 2 x params; every learning rate runs
``max_epochs`` (early stopping can only shorten it) with validation after each epoch, then
predicts the test sets once.
"""

from __future__ import annotations

from dataclasses import dataclass

ACTIVATION_FACTOR = 24  # values saved per token per block (measured, see above)
ATTENTION_PROJECTIONS = 4  # query, key, value, output: each D x D, adapted by LoRA


@dataclass(frozen=True)
class TuneEstimate:
    """Bytes and floating-point operations of one fine-tune."""

    weight_bytes: float
    state_bytes: float
    activation_bytes: float
    flops: float

    @property
    def total_bytes(self) -> float:
        return self.weight_bytes + self.state_bytes + self.activation_bytes

    def seconds(self, tflops: float) -> float:
        """Time at ``tflops`` effective tera-operations per second."""
        return self.flops / (tflops * 1e12)

    def describe(self) -> str:
        return (f"fine-tune memory ~{self.total_bytes / 1e9:.2f} GB ("
                f"{self.weight_bytes / 1e9:.2f} weights + {self.state_bytes / 1e9:.2f} "
                f"gradients and AdamW state + {self.activation_bytes / 1e9:.2f} activations)")


def lora_parameters(n_blocks: int, dim: int, r: int) -> int:
    """Adapter entries of LoRA rank ``r`` on the four D x D attention projections per block."""
    return n_blocks * ATTENTION_PROJECTIONS * r * (dim + dim)


def estimate_tune(mode: str, n_params: int, n_blocks: int, dim: int, toks_per_batch: int,
                  train_tokens: int, eval_tokens: int, test_tokens: int, n_rates: int,
                  max_epochs: int, lora_r: int = 8, bf16: bool = True,
                  gradient_checkpointing: bool = False, n_out: int = 1) -> TuneEstimate:
    """The estimate of one fine-tune (see the module docstring); tokens include specials."""
    if mode not in ("lora", "full"):
        raise ValueError(f"tune.mode={mode!r}: only lora and full fine-tunes are estimated")
    head = dim * dim + dim + dim * n_out + n_out
    trained = (lora_parameters(n_blocks, dim, lora_r) if mode == "lora" else n_params) + head
    value_bytes = 2 if bf16 else 4
    per_block = ACTIVATION_FACTOR * dim * value_bytes
    if gradient_checkpointing:
        activations = toks_per_batch * (n_blocks * dim * value_bytes + per_block)
    else:
        activations = toks_per_batch * n_blocks * per_block
    train_cost = (6 if mode == "full" else 4) * n_params
    flops = (n_rates * max_epochs * (train_cost * train_tokens + 2 * n_params * eval_tokens)
             + n_rates * 2 * n_params * (eval_tokens + test_tokens))
    return TuneEstimate(4.0 * n_params, 12.0 * trained, float(activations), float(flops))
