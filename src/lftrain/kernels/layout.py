"""The compiled moves between packed rows and the head-major attention grid (layout.c), as autograd functions
that are each other's backward; `models/unpad.py` uses them when the kernels load."""

from __future__ import annotations

import torch

from lftrain import kernels


def _to_heads(rows: torch.Tensor, grid_row: torch.Tensor, grid: tuple[int, int], heads: int) -> torch.Tensor:
    batch, width = grid
    rows = rows.contiguous()
    out = rows.new_empty(batch, heads, width, rows.shape[-1] // heads)
    kernels.load().lft_rows_to_heads(rows.data_ptr(), grid_row.data_ptr(), out.data_ptr(), batch, width, heads,
                                     out.shape[-1] * out.element_size())
    return out


def _to_rows(heads_grid: torch.Tensor, row_grid: torch.Tensor) -> torch.Tensor:
    batch, heads, width, size = heads_grid.shape
    heads_grid = heads_grid.contiguous()
    out = heads_grid.new_empty(row_grid.numel(), heads * size)
    kernels.load().lft_heads_to_rows(heads_grid.data_ptr(), row_grid.data_ptr(), out.data_ptr(), row_grid.numel(),
                                     width, heads, size * heads_grid.element_size())
    return out


class RowsToHeads(torch.autograd.Function):
    """(rows, heads·size) -> (B, heads, W, size): each row at its grid position, zeros at the others."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, grid_row: torch.Tensor, row_grid: torch.Tensor, grid: tuple[int, int],
                heads: int) -> torch.Tensor:
        ctx.row_grid = row_grid
        return _to_heads(rows, grid_row, grid, heads)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _to_rows(grad, ctx.row_grid), None, None, None, None


class HeadsToRows(torch.autograd.Function):
    """(B, heads, W, size) -> (rows, heads·size): the grid positions of the rows, gathered."""

    @staticmethod
    def forward(ctx, heads_grid: torch.Tensor, grid_row: torch.Tensor, row_grid: torch.Tensor) -> torch.Tensor:
        ctx.grid_row, ctx.grid, ctx.heads = grid_row, (heads_grid.shape[0], heads_grid.shape[2]), heads_grid.shape[1]
        return _to_rows(heads_grid, row_grid)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _to_heads(grad, ctx.grid_row, ctx.grid, ctx.heads), None, None
