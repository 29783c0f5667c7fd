"""Encoder layers whose projections and feed-forward blocks skip the batch's padding tokens.

A padded batch of B rows × W tokens holds fewer real tokens than B·W: length-grouped batches rounded up to a
multiple of 8 (`task.pad_to_multiple_of`) carried ~13% padding on the Rotten Tomatoes reviews. In a BERT-family
layer only attention mixes tokens; the query/key/value projections, the attention output, the feed-forward block
and the layer norms work row by row, and the rows of padding tokens feed nothing a classifier reads (attention
masks them as keys, and the head reads no padding row; a left-padded batch, whose first position may be padding that
the head reads, takes the whole grid). So each layer gathers the real rows, runs the row-wise work
on them alone, and puts the queries, keys and values back on the padded grid only for the attention product. The
logits and gradients are those of the padded layer (`tests/unit/test_unpad.py`); the outputs at padding positions
are zeros instead of values nobody reads.

The number of rows is rounded up to a multiple of 128 with padding positions: oneDNN compiles (and caches, up to
1,024) a kernel for every matmul shape. One epoch of the reviews has 10 distinct padded grid sizes; its row counts take
25 distinct values in multiples of 64 (10.3% fewer rows than the grid) and 14 in multiples of 128 (7.2% fewer). With
64, the freeze4 benchmark's peak memory rose from 1,252 to 1,347 MB (one run each; docs/performance.md). In a later
measurement (`benchmarks/ab_steps.py`), multiples of 32 made full fine-tuning steps 2% faster, but each new matmul
shape held ~0.65 MB of compiled kernels, and freeze4 peaked at 1,400 MB instead of 1,181.

Where the compiled kernels load (`kernels/`), the moves between packed rows and the head-major attention grid are
one pass each way (`kernels/layout.py`), and with fast dropout's attention (`lft_eager`) under bf16 autocast on a
CPU with AVX-512 the attention between the two matmuls (scaling, key-padding mask, softmax, dropout) is too
(`kernels/attention.py`; its key-padding mask is the batch's own `attention_mask`). With them, a batch whose
rounded row count reaches the whole grid (under ~10% padding, which length-grouped batches often have: with the
compiled attention alone, torch's softmax still took 1.85 of its former 3.07 ms a full fine-tuning step) also
takes this path, every position a row: no rows are skipped, but the attention and the moves are the compiled ones
(`PACK_FULL_GRIDS`; steps 0.8% faster, `benchmarks/results/ab_steps-2026-11-30-full-packfull.json`). Without the
kernels such a batch runs the plain layer: packing it would skip nothing and add the moves.

Installed like `first_token.py`: each layer's `forward` is replaced on the instance (parameter names and saved
models are unchanged) and the short path runs only inside the classifier's own forward call (`forward_scope.py`).
A layer that already has its own path (the first-token last layer) keeps it, and takes the rows packed: it computes its
keys and values for them and its query for each example's first row.
"""

from __future__ import annotations

import types

import torch
from torch import nn

from lftrain import kernels
from lftrain.kernels.attention import kernel_attention
from lftrain.kernels.layout import HeadsToRows, RowsToHeads
from lftrain.models.fast_dropout import kernel_attention_applies
from lftrain.models.first_token import FIRST_TOKEN_HEADS
from lftrain.models.forward_scope import (
    FIRST_TOKEN_STATE,
    UNPAD_STATE,
    ShortPath,
    during_plain_forward,
    supported_layer,
)

ROWS_MULTIPLE = 128
PACK_FULL_GRIDS = True  # with the compiled kernels, batches with no padding rows to skip take the packed path too
COMPILED_LAYOUT = True  # False: torch's operators move rows to and from the attention grid even where kernels load
_STATE, _LAST = UNPAD_STATE, "_lft_unpad_last"


class _Rows(ShortPath):
    """The flat (B·W) grid positions the current batch's layers compute: every real token, then padding positions
    up to a multiple of ROWS_MULTIPLE. `index` None: compute the whole grid."""

    index: torch.Tensor | None = None
    grid: tuple[int, int] = (0, 0)
    first: torch.Tensor | None = None  # where each example's position 0 sits among the rows (for the head's layer)
    real: torch.Tensor | None = None  # (B, W) uint8, 1 at real tokens: the key-padding mask of the compiled attention
    grid_row: torch.Tensor | None = None  # (B·W,) int64: the row at each grid position or -1 (compiled layout moves)
    first_token_above: bool = False  # the stack ends in a first-token layer that can take the rows packed

    def enter(self, kwargs: dict) -> None:
        mask = kwargs.get("attention_mask")
        self.index = self.first = self.real = self.grid_row = None
        if mask is None or mask.dim() != 2:
            return
        real = mask != 0
        count = int(real.sum())
        rows = min(-(-count // ROWS_MULTIPLE) * ROWS_MULTIPLE, real.numel())
        # Left padding: the head reads position 0 even where it is padding, so every row's output counts.
        if not bool(real[:, 0].all()):
            return
        compiled = (COMPILED_LAYOUT and mask.device.type == "cpu" and not torch.compiler.is_compiling()
                    and kernels.load() is not None)
        # With no padding rows to skip (few, or fewer than the rounding), only the compiled moves and attention
        # make the packed path worth taking; without them it would skip nothing and add the moves.
        if rows == real.numel() and not (compiled and PACK_FULL_GRIDS):
            return
        # A stable sort puts the real positions first, in order, and the padding positions after them.
        self.index = torch.argsort((~real.reshape(-1)).to(torch.uint8), stable=True)[:rows]
        self.grid = tuple(mask.shape)
        self.real = real.to(torch.uint8)
        if compiled:
            self.grid_row = torch.full((real.numel(),), -1, dtype=torch.int64)
            self.grid_row[self.index] = torch.arange(rows)
        if self.first_token_above:
            lengths = real.sum(1)
            self.first = torch.cumsum(lengths, 0) - lengths  # each example's first row among the packed rows

    def leave(self) -> None:
        self.index = self.first = self.real = self.grid_row = None

    def on_grid(self, packed: torch.Tensor, head_size: int) -> torch.Tensor:
        """(rows, H) -> (B, heads, W, head size), zeros at the positions not computed."""
        batch, width = self.grid
        if self.grid_row is not None:  # one pass (kernels/layout.c), contiguous for the batched matmuls
            return RowsToHeads.apply(packed, self.grid_row, self.index, self.grid, packed.shape[-1] // head_size)
        grid = packed.new_zeros(batch * width, packed.shape[-1]).index_copy(0, self.index, packed)
        return grid.view(batch, width, -1, head_size).transpose(1, 2)

    def from_heads(self, grid: torch.Tensor) -> torch.Tensor:
        """(B, heads, W, head size) -> (rows, H): the computed positions, gathered."""
        if self.grid_row is not None:
            return HeadsToRows.apply(grid, self.grid_row, self.index)
        batch, heads, width, size = grid.shape
        return grid.transpose(1, 2).reshape(batch * width, heads * size).index_select(0, self.index)


def _unpadded_forward(layer: nn.Module, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      *args, **kwargs) -> torch.Tensor:
    rows = getattr(layer, _STATE)
    index = rows.index
    packed_in = hidden_states.dim() == 2  # (rows, H) from the unpadded layer below
    if index is None or not packed_in and tuple(hidden_states.shape[:2]) != rows.grid:
        return type(layer).forward(layer, hidden_states, attention_mask, *args, **kwargs)
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.bert.modeling_bert import eager_attention_forward

    sa = layer.attention.self
    batch, width = rows.grid
    x = hidden_states if packed_in else hidden_states.reshape(batch * width, -1).index_select(0, index)
    query, key, value = (rows.on_grid(proj(x), sa.attention_head_size) for proj in (sa.query, sa.key, sa.value))
    p = sa.dropout.p if sa.training else 0.0
    if kernel_attention_applies(sa, query, width):  # the mask is the key padding: rows.real says it
        context = rows.from_heads(kernel_attention(query, key, value, rows.real, sa.scaling, p))
    else:
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(sa.config._attn_implementation, eager_attention_forward)
        context, _ = attend(sa, query, key, value, attention_mask, dropout=p, scaling=sa.scaling)
        context = context.reshape(batch * width, -1).index_select(0, index)
    out = layer.feed_forward_chunk(layer.attention.output(context, x))
    if not getattr(layer, _LAST) or rows.first is not None:
        return out  # the next layer takes the rows as they are: no scatter and gather between layers
    return out.new_zeros(batch * width, out.shape[-1]).index_copy(0, index, out).view(batch, width, -1)


def install_unpadded_layers(model: nn.Module) -> str | None:
    """Make a BERT-family classifier's layers skip padding rows during its forward. Returns why it was not installed
    (None when it was)."""
    from lftrain.models.adaptation import find_layers, unwrap

    hf = unwrap(model)
    if type(hf).__name__ not in FIRST_TOKEN_HEADS:
        return f"not a BERT-family sequence classifier ({type(hf).__name__})"
    stack = find_layers(model)
    layers = [] if stack is None else [layer for layer in stack.layers if "forward" not in vars(layer)]
    if not layers or not all(supported_layer(layer) for layer in layers):
        return "the layers are not BERT-style encoder layers"
    rows = _Rows()
    last = stack.layers[-1]
    if getattr(last, FIRST_TOKEN_STATE, None) is not None:  # the head's layer takes the rows packed too
        rows.first_token_above = True
        setattr(last, _STATE, rows)
    for layer in layers:
        setattr(layer, _STATE, rows)
        setattr(layer, _LAST, layer is layers[-1])  # it returns the padded grid, for the layer above or the head
        layer.forward = types.MethodType(_unpadded_forward, layer)
    during_plain_forward(hf, _STATE, rows)
    return None
