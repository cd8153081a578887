"""The KAN's parameter-matched MLP widths and its layer settings against values worked out here,
written to kill the mutants `scripts/mutation.py` found surviving (the no-hidden-layer case, the
floor of one unit, which side of the parameter target the bisection's answer lands on, layer
settings a stack of layers dropped). The loss had no survivor."""
from kfusion.model.kan import KAN, kan_parameter_count, matched_mlp_widths


def _mlp_count(widths: list[int]) -> int:
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))


def test_no_hidden_layer_is_returned_unchanged():
    # a bare [in, out] has nothing to scale (and no MLP of that shape can match a KAN's count)
    assert matched_mlp_widths([68, 68], 5, 3) == [68, 68]
    assert matched_mlp_widths((3, 7), 2, 1) == [3, 7]


def test_the_closer_side_of_the_parameter_target_wins():
    # KAN [10, 10, 10], G=5, k=3: 10 parameters per edge, 200 edges -> 2000
    assert kan_parameter_count([10, 10, 10], 5, 3) == 2000
    # MLP [10, h, 10]: 10h + h + 10h + 10 = 21h + 10; h = 94 -> 1984 (16 short),
    # h = 95 -> 2005 (5 over): the one above the target is closer
    assert (_mlp_count([10, 94, 10]), _mlp_count([10, 95, 10])) == (1984, 2005)
    assert matched_mlp_widths([10, 10, 10], 5, 3) == [10, 95, 10]
    # KAN [68, 512, 68] (the paper's head): 137h + 68; h = 5082 -> 696302 (18 short),
    # 5083 -> 696439 (119 over): the one below
    assert matched_mlp_widths([68, 512, 68], 5, 3) == [68, 5082, 68]


def test_hidden_widths_scale_together_and_never_below_one():
    # KAN [1, 1, 10, 1] with G = k = 0: 2 parameters per edge, 1 + 10 + 10 edges -> 42.
    # MLP [1, h1, h2, 1] = 2 h1 + h1 h2 + 2 h2 + 1 with h1 = max(1, round(s)),
    # h2 = max(1, round(10 s)): s just above 1.25 gives h1 = 1, h2 = 13 -> 42 exactly
    # (a floor of 2 instead would force h1 = 2 and land on [1, 2, 9, 1]-like counts)
    assert kan_parameter_count([1, 1, 10, 1], 0, 0) == 42
    assert _mlp_count([1, 1, 13, 1]) == 42
    assert matched_mlp_widths([1, 1, 10, 1], 0, 0) == [1, 1, 13, 1]
    # KAN [1, 1, 100], G = k = 0: 2 * 101 = 202 = the MLP [1, 1, 100] (102 + 100): the scale
    # bisects to 0 and the hidden width is floored at 1
    assert matched_mlp_widths([1, 1, 100], 0, 0) == [1, 1, 100]


def test_kan_passes_its_layer_settings_to_every_layer():
    kan = KAN([2, 3, 1], grid_size=7, spline_order=2, grid_range=(0.0, 1.4))
    for layer, (i, o) in zip(kan.layers, ((2, 3), (3, 1))):
        assert (layer.in_features, layer.out_features) == (i, o)
        assert (layer.grid_size, layer.spline_order) == (7, 2)
        assert tuple(layer.spline_weight.shape) == (o, i, 7 + 2)      # G + k bases per edge
        # h = 1.4 / 7 = 0.2; the extended grid starts k = 2 knots below 0: -0.4
        assert max(abs(h - 0.2) for h in layer.grid_step.tolist()) < 1e-6
        assert max(abs(s + 0.4) for s in layer.grid_start.tolist()) < 1e-6
