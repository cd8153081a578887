"""B-spline Kolmogorov-Arnold layers (paper Eq. 2 and the head of Eq. 12).

Each edge (input i -> output o) carries a learnable univariate function, as in the
original KAN (Liu et al.) and the efficient-kan formulation:

    phi_oi(x) = base_weight[o, i] * silu(x) + spline_scaler[o, i] * sum_b spline_weight[o, i, b] B_b(x)

with B_b the order-k B-splines on a grid of G intervals over `grid_range`, extended by k
knots on each side (G + k bases per input). Outside the extended grid every basis is zero
(the order-0 indicators are half-open [t_i, t_{i+1})), exactly as efficient-kan does.

Why this is fast: the usual implementation runs Cox-de Boor over all G + k bases of every
input (k rounds of elementwise ops on an N x in x (G + 2k) tensor). On a uniform grid only
k + 1 bases are non-zero at any x, and they are fixed polynomials of the position u in
[0, 1) inside the knot span: [B_{j-k}(x) .. B_j(x)] = [1, u, .., u^k] @ M_k (the uniform
B-spline basis matrix). We evaluate those k + 1 values by Horner's rule, scatter them into
the dense N x in x (G + k) basis tensor, and do one matmul with the spline weights.
The grid may differ per input feature (after `update_grid`) but stays uniform.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def uniform_bspline_matrix(order: int) -> torch.Tensor:
    """k! M (k+1, k+1), int64: B_{j-k+r}(t_j + u h) = sum_p u^p M[p, r], u in [0, 1).

    Kept as integers times k! so that casting the module (.double(), .half()) never
    rounds the coefficients; they are exact in any float dtype and divided by k! at use.

    From the cardinal B-spline N_k(t) = 1/k! sum_i (-1)^i C(k+1, i) (t - i)_+^k: on the span
    where basis r is evaluated, t = u + k - r and exactly the terms i <= k - r are active.
    """
    k = order
    m = [[0] * (k + 1) for _ in range(k + 1)]
    for r in range(k + 1):
        for i in range(k - r + 1):
            c = k - r - i  # (u + c)^k, expanded binomially
            for p in range(k + 1):
                m[p][r] += (-1) ** i * math.comb(k + 1, i) * math.comb(k, p) * c ** (k - p)
    return torch.tensor(m, dtype=torch.int64)


def _span_position(x, start, step, grid_size: int, order: int):
    """Knot span and position u in [0, 1) inside it, both (N, in). Inputs outside the
    extended grid get span -1 or G + 2k, whose k + 1 bases all fall outside the G + k real
    columns (`_columns`), i.e. are zero: the same half-open rule as Cox-de Boor's order-0
    indicators."""
    t = ((x - start) / step).clamp(-1, grid_size + 2 * order)  # (N, in), knot units
    span = torch.floor(t)
    return span, t - span


def _horner(coef: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """sum_p u^p coef[p, r] for all k + 1 segment polynomials r at once -> (k+1, N, in).
    r-major: every addcmul runs over a contiguous (N, in) plane (4x faster on CPU than an
    (N, in, k+1) layout, whose inner dimension is too short to vectorise), and each value
    goes through the same operations in the same order, so the result is the same."""
    c = coef.T[:, :, None, None]  # (k+1, P, 1, 1)
    vals = c[:, -1].expand(-1, *u.shape)
    for p in range(coef.shape[0] - 2, -1, -1):
        vals = torch.addcmul(c[:, p], vals, u)
    return vals


def _columns(span: torch.Tensor, order: int, n_bases: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Column of each of the k + 1 bases non-zero at x, (k+1, N, in): basis r of the span
    is column span - k + r. Returns the columns clamped into [0, G + k) and which of them
    are real (the others are beyond the grid: their value is zero)."""
    cols = span.long() + torch.arange(-order, 1, device=span.device)[:, None, None]
    inside = (cols >= 0) & (cols < n_bases)
    return cols.clamp(0, n_bases - 1), inside


class _UniformBSplines(torch.autograd.Function):
    """Dense (N, in, G + k) bases from k + 1 closed-form values per input, added into a row
    of zeros (the values that fall beyond the grid added as zeros where a real one already
    sits, so no padded row has to be allocated, zeroed and copied). Backward recomputes
    instead of saving the intermediates: it keeps only x, gathers the incoming gradient at
    the same k + 1 columns and multiplies by the derivative polynomials (d/dx = d/du / h)."""

    @staticmethod
    def forward(ctx, x, start, step, matrix, grid_size: int, order: int):
        span, u = _span_position(x, start, step, grid_size, order)
        coef = matrix.to(x.dtype) / math.factorial(order)  # exact integers / k!
        n_bases = grid_size + order
        cols, inside = _columns(span, order, n_bases)
        values = torch.where(inside, _horner(coef, u), 0)  # (k+1, N, in)
        bases = x.new_zeros(*x.shape, n_bases)
        # 0 + v = v exactly: every real column receives its one value, the rest stay zero
        bases.scatter_add_(-1, cols.permute(1, 2, 0), values.permute(1, 2, 0))
        ctx.save_for_backward(x, start, step, matrix)
        ctx.sizes = (grid_size, order)
        return bases

    @staticmethod
    def backward(ctx, grad):
        x, start, step, matrix = ctx.saved_tensors
        grid_size, order = ctx.sizes
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        span, u = _span_position(x, start, step, grid_size, order)
        powers = torch.arange(1, order + 1, device=x.device, dtype=x.dtype)[:, None]
        dcoef = matrix[1:].to(x.dtype) * powers / math.factorial(order)  # (k, k+1)
        cols, inside = _columns(span, order, grid_size + order)
        g = torch.where(inside, grad.gather(-1, cols.permute(1, 2, 0)).permute(2, 0, 1), 0)
        grad_x = (g * _horner(dcoef, u)).sum(0) / step  # (N, in)
        return grad_x, None, None, None, None, None


class KANLinear(nn.Module):
    """One KAN layer: (..., in_features) -> (..., out_features)."""

    def __init__(self, in_features: int, out_features: int, *, grid_size: int = 5,
                 spline_order: int = 3, grid_range: tuple[float, float] = (-1.0, 1.0),
                 scale_noise: float = 0.1, scale_base: float = 1.0, scale_spline: float = 1.0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.grid_size, self.spline_order = grid_size, spline_order
        lo, hi = grid_range
        h = (hi - lo) / grid_size
        # per-input uniform grid: first knot of the extended grid and the knot spacing
        self.register_buffer("grid_start", torch.full((in_features,), lo - spline_order * h))
        self.register_buffer("grid_step", torch.full((in_features,), h))
        self.register_buffer("basis_matrix", uniform_bspline_matrix(spline_order))  # int
        n_bases = grid_size + spline_order
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features))
        self.spline_weight = nn.Parameter(torch.empty(out_features, in_features, n_bases))
        self.spline_scaler = nn.Parameter(torch.empty(out_features, in_features))
        self.scale_noise, self.scale_base, self.scale_spline = scale_noise, scale_base, scale_spline
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        # as the original: kaiming-uniform base and per-edge spline scales, spline weights
        # fitted to small noise at the grid points (so each phi starts near silu * w)
        nn.init.kaiming_uniform_(self.base_weight, a=math.sqrt(5) * self.scale_base)
        nn.init.kaiming_uniform_(self.spline_scaler, a=math.sqrt(5) * self.scale_spline)
        knots = self.knots()[:, self.spline_order:-self.spline_order]  # (in, G+1)
        noise = (torch.rand(knots.shape[1], self.in_features, self.out_features)
                 - 0.5) * self.scale_noise / self.grid_size
        self.spline_weight.copy_(self.curve2coeff(knots.T, noise))

    def knots(self) -> torch.Tensor:
        """The extended grid, (in, G + 2k + 1): what the Cox-de Boor formulation uses."""
        i = torch.arange(self.grid_size + 2 * self.spline_order + 1,
                         device=self.grid_step.device, dtype=self.grid_step.dtype)
        return self.grid_start[:, None] + i * self.grid_step[:, None]

    def b_splines(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in) -> (N, in, G + k) basis values, only k + 1 of them non-zero per input."""
        return _UniformBSplines.apply(x, self.grid_start, self.grid_step, self.basis_matrix,
                                      self.grid_size, self.spline_order)

    def scaled_spline_weight(self) -> torch.Tensor:
        return self.spline_weight * self.spline_scaler.unsqueeze(-1)  # (out, in, G+k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, self.in_features)
        # bases in at least float32 (floor/scatter in half precision would move knots);
        # the two matmuls below follow autocast like any nn.Linear
        xb = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        bases = self.b_splines(xb)  # (N, in, G+k)
        y = F.linear(F.silu(x), self.base_weight)
        y = y + F.linear(bases.flatten(1), self.scaled_spline_weight().flatten(1))
        return y.reshape(*shape[:-1], self.out_features)

    @torch.no_grad()
    def curve2coeff(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Least-squares spline weights so that B(x) @ w = y. x (N, in), y (N, in, out)
        -> (out, in, G + k)."""
        a = self.b_splines(x.to(self.grid_step.dtype)).transpose(0, 1)  # (in, N, G+k)
        b = y.transpose(0, 1).to(a.dtype)  # (in, N, out)
        # lstsq on CPU float64: tiny systems, and the CPU driver handles rank deficiency
        sol = torch.linalg.lstsq(a.double().cpu(), b.double().cpu(), driver="gelsd").solution
        return sol.permute(2, 0, 1).to(self.spline_weight.device, self.spline_weight.dtype)

    @torch.no_grad()
    def update_grid(self, x: torch.Tensor, margin: float = 0.01) -> None:
        """Refit the grid to the data's per-feature range (kept uniform), preserving the
        learned functions by a least-squares refit of the spline weights on x.

        efficient-kan mixes quantile and uniform knots (grid_eps); we take the uniform
        end of that mix (grid_eps = 1) so the closed-form basis stays exact.
        """
        x = x.reshape(-1, self.in_features)
        old = self.b_splines(x.to(self.grid_step.dtype))  # (N, in, G+k)
        y = torch.einsum("nib,oib->nio", old, self.scaled_spline_weight())  # (N, in, out)
        lo, hi = x.min(0).values - margin, x.max(0).values + margin
        h = (hi - lo) / self.grid_size
        self.grid_step.copy_(h)
        self.grid_start.copy_(lo - self.spline_order * h)
        w = self.curve2coeff(x, y)  # (out, in, G+k): includes the per-edge scale
        # keep the scaler, divide it out of the refit weights; an edge whose scale is ~0
        # gets scale 1 instead (its spline is ~0 anyway, and 0/0 would poison it)
        tiny = self.spline_scaler.abs() < 1e-12
        self.spline_scaler.masked_fill_(tiny, 1.0)
        self.spline_weight.copy_(w / self.spline_scaler.unsqueeze(-1))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"grid_size={self.grid_size}, spline_order={self.spline_order}")


class KAN(nn.Module):
    """A stack of KAN layers, widths e.g. [68, 512, 68] (Eq. 2)."""

    def __init__(self, widths: list[int], **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList(KANLinear(a, b, **layer_kwargs)
                                    for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    @torch.no_grad()
    def update_grid(self, x: torch.Tensor, margin: float = 0.01) -> None:
        for layer in self.layers:
            layer.update_grid(x, margin)
            x = layer(x)


class MLP(nn.Module):
    """The `fusion: mlp` head: Linear-SiLU-...-Linear, sized to match a KAN's parameters."""

    def __init__(self, widths: list[int]):
        super().__init__()
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.SiLU()]
        self.net = nn.Sequential(*layers[:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def kan_parameter_count(widths: list[int], grid_size: int, spline_order: int) -> int:
    # base weight + spline scaler + G + k spline weights per edge
    return sum(a * b * (grid_size + spline_order + 2) for a, b in zip(widths[:-1], widths[1:]))


def matched_mlp_widths(widths: list[int], grid_size: int, spline_order: int) -> list[int]:
    """Hidden widths scaled by one common factor so the MLP has about as many parameters as
    the KAN with these widths (the fair `repl MLP` ablation). No hidden layer: unchanged."""
    if len(widths) <= 2:
        return list(widths)
    target = kan_parameter_count(widths, grid_size, spline_order)

    def count(s: float) -> int:
        w = [widths[0]] + [max(1, round(h * s)) for h in widths[1:-1]] + [widths[-1]]
        return sum(a * b + b for a, b in zip(w[:-1], w[1:]))

    lo, hi = 0.0, 1.0
    while count(hi) < target:
        hi *= 2
    for _ in range(60):  # bisection on the scale factor
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if count(mid) < target else (lo, mid)
    s = min((lo, hi), key=lambda v: abs(count(v) - target))
    return [widths[0]] + [max(1, round(h * s)) for h in widths[1:-1]] + [widths[-1]]
