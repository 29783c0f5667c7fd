"""Embedding gradients that touch only the rows a batch uses — same update, far less memory traffic.

A dense word-embedding gradient (30k x 384 floats for MiniLM) is allocated, zero-filled, norm-reduced and
rescaled every step although a batch touches a few hundred rows. Here the embedding produces a sparse gradient;
clipping reads only its rows; before the optimiser step the rows are written into a persistent dense buffer that
AdamW reads as usual (so the update, including the moment decay of untouched rows, is exactly AdamW's); after the
step only those rows are re-zeroed.
"""

from __future__ import annotations

import torch
from torch import nn

MIN_ROWS = 4096  # small embeddings (positions, token types) gain nothing


class SparseEmbeddingGrads:
    def __init__(self, model: nn.Module) -> None:
        shared = {id(p) for m in model.modules() for p in m.parameters(recurse=False)
                  if not isinstance(m, nn.Embedding)}  # tied to an output layer: its gradient is dense anyway
        self.embeddings = [m for m in model.modules()
                           if isinstance(m, nn.Embedding) and m.weight.requires_grad and m.num_embeddings >= MIN_ROWS
                           and id(m.weight) not in shared and not m.sparse]
        for m in self.embeddings:
            m.sparse = True
        self._buffers: dict[int, torch.Tensor] = {}
        self._touched: dict[int, torch.Tensor] = {}

    @property
    def active(self) -> bool:
        return bool(self.embeddings)

    def coalesce(self) -> None:
        """Merge duplicate rows (a token seen twice) so norms and clipping see the true gradient."""
        for m in self.embeddings:
            if m.weight.grad is not None and m.weight.grad.is_sparse:
                m.weight.grad = m.weight.grad.coalesce()

    def densify(self) -> None:
        """Write each sparse gradient into its persistent dense buffer and hand that to the optimiser."""
        for m in self.embeddings:
            g = m.weight.grad
            if g is None or not g.is_sparse:
                continue
            buf = self._buffers.get(id(m))
            if buf is None:
                buf = self._buffers[id(m)] = torch.zeros_like(m.weight)
            rows = g.indices()[0]
            buf.index_copy_(0, rows, g.values().to(buf.dtype))
            self._touched[id(m)] = rows
            m.weight.grad = buf

    def release(self) -> None:
        """Training is over: drop the dense buffers (the size of each embedding table)."""
        self._buffers.clear()
        self._touched.clear()

    def reset(self) -> None:
        """After the optimiser step: zero only the rows written, so the buffer is all zeros again."""
        for key, rows in self._touched.items():
            self._buffers[key].index_fill_(0, rows, 0.0)
        self._touched.clear()


def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Global-norm clipping (as torch.nn.utils.clip_grad_norm_) that reads only the stored rows of sparse grads."""
    grads = [p.grad._values() if p.grad.is_sparse else p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    norms = torch._foreach_norm(grads)
    total = torch.linalg.vector_norm(torch.stack([n.float() for n in norms]))
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    torch._foreach_mul_(grads, coef)
    return total
