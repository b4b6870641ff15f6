"""The TopK code's products as dense matmuls: the GPU path of `sae_core.kernels`.

On a CPU the sparse kernels win: a gathered row costs a few times a matmul entry and the code has
k of d_sae entries per row. On a GPU under bfloat16 autocast it is the other way round: the H200
profile of docs/benchmarks.md (#18) put half the training step in `embedding_bag` (the sparse
decode and the weight gradients grouped by latent), which runs in float32 there because its
bfloat16 CUDA backward is missing, while the matmuls took 3%. Scattering the code into a dense
[batch, d_sae] matrix turns the decode and every weight gradient into tensor-core matmuls: d_sae / k
times more multiply-adds, far fewer cycles.

`SAESCOPE_DENSE_CODE` picks the path: `auto` (default: dense on CUDA only), `1` (everywhere; the
tests run it on a CPU against the sparse kernels), `0` (never).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor


def use_dense_code(t: Tensor) -> bool:
    """Whether the TopK products on t's device go through dense matmuls (see the module doc)."""
    mode = os.environ.get("SAESCOPE_DENSE_CODE", "auto")
    return t.is_cuda if mode == "auto" else mode == "1"


def compute_dtype(t: Tensor) -> torch.dtype:
    """The matmul dtype of the current autocast region on t's device (float32 outside one). Custom
    backward passes run outside autocast, so the forward records this for them."""
    device = t.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.float32


def dense_decode(values: Tensor, indices: Tensor, W: Tensor) -> Tensor:
    """[batch, d]: the code values [batch, n] at latents `indices` [batch, n], scattered into a dense
    [batch, d_sae] matrix in the autocast dtype, times W [d_sae, d]. Plain autograd: the values'
    gradient is a gather of the [batch, d_sae] output gradient, W's one matmul."""
    dtype = compute_dtype(W)
    # scatter_add: a latent repeated in a row adds up, as in embedding_bag (BatchTopK pads rows
    # with (latent 0, value 0) entries, which a plain scatter could write over latent 0's value).
    z = torch.zeros(values.shape[0], W.shape[0], dtype=dtype, device=W.device).scatter_add(1, indices, values.to(dtype))
    return (z @ W.to(dtype)).float()


def dense_encoder_grads(x_c: Tensor, W_enc: Tensor, indices: Tensor, g: Tensor, dead: Tensor | None, g_dead: Tensor | None,
                        need_x: bool, need_w: bool, dtype: torch.dtype) -> tuple[Tensor | None, Tensor | None, Tensor]:
    """(input, W_enc [d_in, d_sae], summed pre-activation) gradients of the TopK encoder from the
    selected entries' gradients g [batch, n] at `indices` (and, for a dense AuxK code, g_dead
    [batch, n_dead] at the columns `dead`), through one dense [batch, d_sae] gradient: the same
    numbers as `kernels._sparse_grads`, as tensor-core matmuls in `dtype`."""
    G = torch.zeros(g.shape[0], W_enc.shape[1], dtype=torch.float32, device=g.device)
    G.scatter_add_(1, indices, g.float())  # a latent can be in the main code and the AuxK code of a row
    if g_dead is not None:
        G.index_add_(1, dead, g_dead.float())
    grad_pre_sum = G.sum(0)
    G_c = G.to(dtype)
    grad_w = (x_c.to(dtype).t() @ G_c).to(W_enc.dtype) if need_w else None
    grad_x = (G_c @ W_enc.to(dtype).t()).to(x_c.dtype) if need_x else None
    return grad_x, grad_w, grad_pre_sum
