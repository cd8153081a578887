"""The fast KAN layer against a slow, obviously-correct reference (Cox-de Boor recursion,
one edge at a time), written here from the definition."""
import math

import pytest
import torch

from kfusion.model.kan import (KAN, MLP, KANLinear, kan_parameter_count, matched_mlp_widths,
                       uniform_bspline_matrix)


def cox_de_boor(x: float, knots: list[float], i: int, k: int) -> float:
    """B_{i,k}(x) by the recursion; order 0 is the half-open indicator [t_i, t_{i+1})."""
    if k == 0:
        return 1.0 if knots[i] <= x < knots[i + 1] else 0.0
    left = (x - knots[i]) / (knots[i + k] - knots[i]) * cox_de_boor(x, knots, i, k - 1)
    right = ((knots[i + k + 1] - x) / (knots[i + k + 1] - knots[i + 1])
             * cox_de_boor(x, knots, i + 1, k - 1))
    return left + right


def reference_forward(layer: KANLinear, x: torch.Tensor) -> torch.Tensor:
    """y[n, o] = sum_i w_b silu(x) + s_oi sum_b c_oib B_b(x), one edge at a time."""
    k, n_bases = layer.spline_order, layer.grid_size + layer.spline_order
    knots = layer.knots().double().tolist()
    wb, ws, sc = (t.detach().double() for t in
                  (layer.base_weight, layer.spline_weight, layer.spline_scaler))
    y = torch.zeros(x.shape[0], layer.out_features, dtype=torch.float64)
    for n in range(x.shape[0]):
        for o in range(layer.out_features):
            for i in range(layer.in_features):
                xi = float(x[n, i])
                spline = sum(float(ws[o, i, b]) * cox_de_boor(xi, knots[i], b, k)
                             for b in range(n_bases))
                y[n, o] += float(wb[o, i]) * xi / (1 + math.exp(-xi)) + float(sc[o, i]) * spline
    return y


def probe_inputs(layer: KANLinear, n_random: int = 12) -> torch.Tensor:
    """Random points plus every knot, the grid ends, and points beyond the extended grid."""
    knots = layer.knots()[0].double()
    special = torch.cat([knots, knots[[0, -1]] + torch.tensor([-1e-3, 1e-3], dtype=torch.float64),
                         knots[[0, -1]] + torch.tensor([-0.7, 0.7], dtype=torch.float64),
                         torch.tensor([-5.0, 5.0, 0.0], dtype=torch.float64)])
    rand = torch.empty(n_random, dtype=torch.float64).uniform_(-3, 3)
    pts = torch.cat([special, rand])
    # a different permutation per input feature, so rows mix in-grid and out-of-grid values
    return torch.stack([pts[torch.randperm(len(pts))] for _ in range(layer.in_features)], 1)


def test_basis_matrix_cubic_is_the_textbook_one():
    # uniform cubic B-spline matrix, rows = powers of u: 1/6 [[1,4,1,0],[-3,0,3,0],[3,-6,3,0],[-1,3,-3,1]]
    want = torch.tensor([[1, 4, 1, 0], [-3, 0, 3, 0], [3, -6, 3, 0], [-1, 3, -3, 1]])
    assert torch.equal(uniform_bspline_matrix(3), want)  # stored as 3! M, exact integers
    assert torch.equal(uniform_bspline_matrix(1), torch.tensor([[1, 0], [-1, 1]]))


@pytest.mark.parametrize("grid_size,order,grid_range", [(5, 3, (-1.0, 1.0)), (3, 1, (0.0, 2.0)),
                                                        (4, 2, (-2.0, 1.0)), (7, 4, (-1.0, 1.0))])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_layer_matches_cox_de_boor_reference(grid_size, order, grid_range, dtype):
    torch.manual_seed(grid_size * 10 + order)
    layer = KANLinear(3, 4, grid_size=grid_size, spline_order=order, grid_range=grid_range)
    with torch.no_grad():  # make every edge's spline matter, not only the init's noise
        layer.spline_weight.normal_()
        layer.spline_scaler.normal_()
    layer = layer.to(dtype)
    x = probe_inputs(layer)
    want = reference_forward(layer, x.to(dtype).double())
    got = layer(x.to(dtype)).double()
    assert (got - want).abs().max().item() < 1e-5


def test_bases_vanish_outside_extended_grid_and_sum_to_one_inside():
    layer = KANLinear(1, 1, grid_size=5, spline_order=3).double()
    ends = layer.knots()[0]
    outside = torch.tensor([[ends[0].item() - 1e-9], [ends[-1].item()], [9.0], [-9.0]],
                           dtype=torch.float64)
    assert layer.b_splines(outside).abs().max() == 0
    inside = torch.linspace(-1, 1 - 1e-9, 101, dtype=torch.float64)[:, None]  # grid_range
    torch.testing.assert_close(layer.b_splines(inside).sum(-1),
                               torch.ones(101, 1, dtype=torch.float64))
    # exactly k + 1 = 4 non-zero bases inside a span (away from knots)
    assert (layer.b_splines(torch.tensor([[0.1]], dtype=torch.float64)) > 0).sum() == 4


def test_gradcheck_float64():
    torch.manual_seed(0)
    kan = KAN([3, 4, 2], grid_size=4, spline_order=3).double()
    x = (torch.rand(5, 3, dtype=torch.float64) * 2.6 - 1.3).requires_grad_()  # avoid knots
    params = tuple(p for p in kan.parameters())
    assert torch.autograd.gradcheck(lambda x, *p: kan(x), (x, *params), eps=1e-6, atol=1e-5)


def test_batch_shapes_and_rows_independent():
    torch.manual_seed(0)
    kan = KAN([6, 5, 6])
    x = torch.randn(2, 3, 4, 6)
    y = kan(x)
    assert y.shape == (2, 3, 4, 6)
    torch.testing.assert_close(y[1, 2], kan(x[1, 2]))


def test_update_grid_covers_data_and_keeps_function():
    torch.manual_seed(0)
    kan = KAN([3, 5, 2], grid_size=8, spline_order=3).double()
    x = torch.randn(400, 3, dtype=torch.float64) * 0.4
    before = kan(x)
    kan.update_grid(x, margin=0.01)
    first = kan.layers[0]
    lo, hi = first.knots()[:, 3], first.knots()[:, -4]  # the grid proper (not the extension)
    torch.testing.assert_close(lo, x.min(0).values - 0.01)
    torch.testing.assert_close(hi, x.max(0).values + 0.01)
    after = kan(x)
    # a refit on a new grid is a least-squares approximation, not an identity
    assert (after - before).abs().max() < 0.05 * before.abs().max()


def test_matched_mlp_has_about_the_kans_parameters():
    widths = matched_mlp_widths([68, 512, 68], 5, 3)
    kan_n = kan_parameter_count([68, 512, 68], 5, 3)
    assert kan_n == sum(p.numel() for p in KAN([68, 512, 68]).parameters()) == 696320
    mlp_n = sum(p.numel() for p in MLP(widths).parameters())
    assert abs(mlp_n - kan_n) / kan_n < 0.01
    assert widths[0] == 68 and widths[-1] == 68 and len(widths) == 3


class PaddedBSplines(torch.autograd.Function):
    """The basis as it was built before issue 16 (kept here as the reference): the k + 1
    values scattered into a zeroed padded row of G + 3k + 2 columns, the real G + k sliced
    out; backward gathers from the gradient padded the same way."""

    @staticmethod
    def forward(ctx, x, start, step, matrix, grid_size, order):
        t = ((x - start) / step).clamp(-1, grid_size + 2 * order)
        span = torch.floor(t)
        u = (t - span).unsqueeze(-1)
        coef = matrix.to(x.dtype) / math.factorial(order)
        vals = coef[-1].expand(*u.shape[:-1], coef.shape[1])
        for p in range(coef.shape[0] - 2, -1, -1):
            vals = torch.addcmul(coef[p], vals, u)
        cols = span.long().unsqueeze(-1) + 1 + torch.arange(order + 1)
        padded = x.new_zeros(*x.shape, grid_size + 3 * order + 2).scatter_(-1, cols, vals)
        ctx.save_for_backward(x, start, step, matrix)
        ctx.sizes = (grid_size, order)
        return padded[..., order + 1: 2 * order + 1 + grid_size].contiguous()

    @staticmethod
    def backward(ctx, grad):
        x, start, step, matrix = ctx.saved_tensors
        grid_size, order = ctx.sizes
        t = ((x - start) / step).clamp(-1, grid_size + 2 * order)
        span = torch.floor(t)
        u = (t - span).unsqueeze(-1)
        powers = torch.arange(1, order + 1, dtype=x.dtype)[:, None]
        dcoef = matrix[1:].to(x.dtype) * powers / math.factorial(order)
        vals = dcoef[-1].expand(*u.shape[:-1], dcoef.shape[1])
        for p in range(dcoef.shape[0] - 2, -1, -1):
            vals = torch.addcmul(dcoef[p], vals, u)
        cols = span.long().unsqueeze(-1) + 1 + torch.arange(order + 1)
        g = torch.nn.functional.pad(grad, (order + 1, order + 1)).gather(-1, cols)
        return (g * vals).sum(-1) / step, None, None, None, None, None


@pytest.mark.parametrize("in_features,grid_size,order,dtype", [
    (128, 5, 3, torch.float32), (68, 5, 3, torch.float32), (16, 7, 2, torch.float32),
    (9, 4, 1, torch.float64), (33, 5, 3, torch.float64)])
def test_bases_and_their_gradient_are_bit_identical_to_the_padded_construction(
        in_features, grid_size, order, dtype):
    # the faster construction (issue 16) must not move a single bit: trained checkpoints and
    # every published number depend on it. Inputs: random, every knot, beyond both ends.
    torch.manual_seed(in_features)
    layer = KANLinear(in_features, 11, grid_size=grid_size, spline_order=order).to(dtype)
    x = torch.cat([torch.randn(1500, in_features, dtype=dtype) * 0.9,
                   probe_inputs(layer).to(dtype)[:, :1].expand(-1, in_features)])
    weights = torch.randn(11, in_features * (grid_size + order), dtype=dtype)
    out = []
    for basis in (layer.b_splines, lambda v: PaddedBSplines.apply(
            v, layer.grid_start, layer.grid_step, layer.basis_matrix, grid_size, order)):
        xg = x.clone().requires_grad_()
        bases = basis(xg)
        torch.nn.functional.linear(bases.flatten(1), weights).square().sum().backward()
        out.append((bases.detach(), xg.grad))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])
