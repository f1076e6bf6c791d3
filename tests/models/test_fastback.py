import pytest
import torch

from models.fastback import FastBackEncoder, TemporalConfig


def make(lookback=8, lookahead=0, ahead_heads=0, layers=3, dim=32, in_dim=16, seed=0):
    torch.manual_seed(seed)
    cfg = TemporalConfig(
        dim=dim,
        num_layers=layers,
        num_lookback_heads=2,
        num_lookahead_heads=ahead_heads,
        lookback_frames=lookback,
        lookahead_frames=lookahead,
    )
    model = FastBackEncoder(cfg, in_dim=in_dim).eval()
    with torch.no_grad():  # non-trivial relative biases, so that masking mistakes show
        for block in model.blocks:
            block.attn.bias_back.normal_()
            block.attn.bias_ahead.normal_()
    return model


def run_steps(model, x, cache=None):
    cache = cache or model.init_cache(x.shape[0])
    outs = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            y, cache = model.step(x[:, t], cache)
            outs.append(y)
    return torch.stack(outs, 1), cache


def test_step_equals_forward_on_sequences_longer_than_the_lookback():
    model = make(lookback=8)
    x = torch.randn(3, 50, 16)
    with torch.no_grad():
        ref = model(x)
    steps, _ = run_steps(model, x)
    torch.testing.assert_close(steps, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("lookahead", "layers"), [(1, 1), (2, 2), (3, 2), (5, 3)])
def test_lookahead_k_delays_step_outputs_by_exactly_k_and_matches_forward(lookahead, layers):
    model = make(lookback=6, lookahead=lookahead, ahead_heads=2, layers=layers)
    assert model.delay_frames == lookahead
    assert sum(model.config.layer_lookahead(i) for i in range(layers)) == lookahead
    x = torch.randn(2, 40, 16)
    with torch.no_grad():
        ref = model(x)
    steps, _ = run_steps(model, x)
    d = lookahead
    torch.testing.assert_close(steps[:, d:], ref[:, : 40 - d], atol=1e-5, rtol=1e-5)


def test_lookahead_k_sees_exactly_k_future_frames():
    model = make(lookback=6, lookahead=3, ahead_heads=2, layers=2)
    x = torch.randn(1, 30, 16)
    y = x.clone()
    y[:, 20] = torch.randn(16)  # frame 20 may change outputs 17.. (3 frames of lookahead)
    with torch.no_grad():
        a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :17], b[:, :17])
    assert not torch.allclose(a[:, 17], b[:, 17])


def test_outputs_do_not_depend_on_frames_beyond_the_lookahead():
    model = make(lookback=6, layers=2)
    x = torch.randn(1, 30, 16)
    y = x.clone()
    y[:, 20:] = torch.randn(1, 10, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:, :20], model(y)[:, :20])


def test_outputs_do_not_depend_on_frames_older_than_the_receptive_field():
    model = make(lookback=4, layers=2)  # receptive field: 2 * (4 - 1) + 1 = 7 frames
    x = torch.randn(1, 30, 16)
    y = x.clone()
    y[:, :10] = torch.randn(1, 10, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:, 17:], model(y)[:, 17:])


def test_cache_size_is_constant_in_stream_length():
    model = make(lookback=8)
    _, cache_short = run_steps(model, torch.randn(1, 10, 16))
    _, cache_long = run_steps(model, torch.randn(1, 200, 16))
    assert [t.shape for t in cache_short] == [t.shape for t in cache_long]
    assert int(cache_long.count) == 200


def test_first_frames_give_finite_outputs():
    model = make(lookback=8, lookahead=2, ahead_heads=2)
    steps, _ = run_steps(model, torch.randn(1, 3, 16))
    assert torch.isfinite(steps).all()


def test_streams_in_one_batch_are_independent():
    model = make(lookback=5)
    a, b = torch.randn(1, 12, 16), torch.randn(1, 12, 16)
    ya, _ = run_steps(model, a)
    yb, _ = run_steps(model, b)
    both, _ = run_steps(model, torch.cat([a, b]))
    torch.testing.assert_close(both, torch.cat([ya, yb]), atol=1e-5, rtol=1e-5)


def test_padding_mask_hides_padded_frames_from_real_ones():
    model = make(lookback=8, layers=2)
    x = torch.randn(1, 20, 16)
    padded = torch.cat([torch.randn(1, 5, 16) * 100, x], dim=1)
    valid = torch.cat([torch.zeros(1, 5, dtype=torch.bool), torch.ones(1, 20, dtype=torch.bool)], 1)
    with torch.no_grad():
        torch.testing.assert_close(model(padded, valid)[:, 5:], model(x), atol=1e-5, rtol=1e-5)


def test_config_rejects_inconsistent_lookahead():
    with pytest.raises(ValueError, match="both be 0 or both positive"):
        TemporalConfig(num_lookahead_heads=2, lookahead_frames=0, num_lookback_heads=2)
    with pytest.raises(ValueError, match="not divisible"):
        TemporalConfig(dim=30, num_lookback_heads=4)


def test_cache_shapes_are_the_cache_that_init_cache_builds():
    model = make(lookahead=3, ahead_heads=2, layers=2)
    cache = model.init_cache(5)
    shapes = model.config.cache_shapes(5)
    assert list(shapes) == list(cache._fields)
    assert {name: tuple(t.shape) for name, t in cache._asdict().items()} == shapes
    assert shapes["keys"] == (2, 5, 4, 8 + 3, 8)  # N, B, H, L + A, D
    assert model.config.num_heads == 4 and model.config.head_dim == 8


def test_past_frames_is_the_receptive_field_into_the_past():
    model = make(lookback=4, layers=3)  # 3 * (4 - 1) = 9 frames back
    assert model.config.past_frames == 9
    x = torch.randn(1, 30, 16)
    with torch.no_grad():
        ref = model(x)[0, 20]
        far, near = x.clone(), x.clone()
        far[0, 20 - 10] += 5.0  # just outside: no effect
        near[0, 20 - 9] += 5.0  # the oldest frame it sees
        assert torch.equal(model(far)[0, 20], ref)
        assert not torch.allclose(model(near)[0, 20], ref)


def test_an_unbounded_lookahead_sees_the_whole_future_and_does_not_stream():
    cfg = TemporalConfig(
        dim=32, num_layers=1, num_lookback_heads=2, num_lookahead_heads=2, lookahead_frames=None
    )
    model = FastBackEncoder(cfg, in_dim=16).eval()
    x = torch.randn(1, 40, 16)
    with torch.no_grad():
        ref = model(x)[0, 0]
        x[0, -1] += 5.0
        assert not torch.allclose(model(x)[0, 0], ref)
    with pytest.raises(ValueError, match="no streaming step"):
        model.init_cache(1)
