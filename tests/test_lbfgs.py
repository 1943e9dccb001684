"""kanmodel.lbfgs: the matrix form of the two-loop recursion takes torch's LBFGS steps."""
import pytest
import torch

from kanmodel.lbfgs import LBFGS


def problem():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(40, 30, generator=generator, dtype=torch.float64)
    b = torch.randn(40, generator=generator, dtype=torch.float64)

    def loss(params):
        w, v = params
        return ((a @ w - b) ** 2).mean() + ((v ** 2 - 2) ** 2).sum() + 0.1 * (torch.sin(w) ** 2).sum()

    def fresh():
        return [torch.zeros(30, dtype=torch.float64, requires_grad=True),
                torch.ones(5, dtype=torch.float64, requires_grad=True)]
    return loss, fresh


@pytest.mark.parametrize("history", [5, 50])
def test_steps_match_torch_lbfgs_with_one_iteration_per_step(history):
    loss, fresh = problem()
    theirs, ours = fresh(), fresh()
    reference = torch.optim.LBFGS(theirs, lr=1, max_iter=1, max_eval=25, history_size=history,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-14)
    optimizer = LBFGS(ours, lr=1, history_size=history, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure(params, zero):
        def evaluate():
            zero()
            value = loss(params)
            value.backward()
            return value
        return evaluate

    start = float(loss(ours))
    for _ in range(40):
        expected = reference.step(closure(theirs, reference.zero_grad))
        got = optimizer.step(closure(ours, lambda: [setattr(p, "grad", None) for p in ours]))
        assert float(got.detach()) == pytest.approx(float(expected.detach()), rel=1e-9, abs=1e-12)
    assert float(loss(ours)) < 0.2 * start
    for mine, reference_param in zip(ours, theirs):
        torch.testing.assert_close(mine, reference_param, atol=1e-6, rtol=0)


def test_reset_restarts_from_steepest_descent():
    """After reset, the next step is exactly the first step of a fresh optimizer from the
    same point: no curvature pair, scaling or step length survives."""
    loss, fresh = problem()
    params = fresh()
    optimizer = LBFGS(params, history_size=10)

    def closure_for(ps):
        def closure():
            for p in ps:
                p.grad = None
            value = loss(ps)
            value.backward()
            return value
        return closure

    for _ in range(5):
        optimizer.step(closure_for(params))
    assert optimizer.steps is not None
    optimizer.reset()
    assert optimizer.steps is None and optimizer.direction is None
    twins = [p.detach().clone().requires_grad_(True) for p in params]
    fresh_optimizer = LBFGS(twins, history_size=10)
    before = float(loss(params))
    optimizer.step(closure_for(params))
    fresh_optimizer.step(closure_for(twins))
    assert float(loss(params)) < before
    for mine, twin in zip(params, twins):
        torch.testing.assert_close(mine, twin, atol=0, rtol=0)
