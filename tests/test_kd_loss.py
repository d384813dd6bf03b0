"""kd_loss against an independent numpy hand computation of Eq. 2 (with Hinton's tau^2)."""
import numpy as np
import pytest
import torch

import kd_loss as K
from kd_loss import SPACE, kd_loss


def np_log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def np_kd(s, t, y, tau, alpha):
    """Eq. 2 by hand in float64: (1 - a) CE + a tau^2 mean_b sum_k p_t (log p_t - log p_s)."""
    ce = -np_log_softmax(s)[np.arange(len(y)), y].mean()
    log_ps, log_pt = np_log_softmax(s / tau), np_log_softmax(t / tau)
    kl = (np.exp(log_pt) * (log_pt - log_ps)).sum(axis=1).mean()
    return (1 - alpha) * ce + alpha * tau ** 2 * kl


def logits(seed, b=16, k=10, scale=3.0):
    g = np.random.default_rng(seed)
    return (g.normal(size=(b, k)) * scale, g.normal(size=(b, k)) * scale, g.integers(0, k, size=b))


@pytest.mark.parametrize("tau,alpha", [(1.0, 0.5), (4.0, 0.9), (10.0, 1.0), (2.5, 0.0)])
def test_matches_hand_computation(tau, alpha):
    s, t, y = logits(0)
    got = kd_loss(torch.tensor(s, dtype=torch.float32), torch.tensor(t, dtype=torch.float32),
                  torch.tensor(y), tau, alpha)
    assert got.dtype == torch.float32 and got.dim() == 0
    assert got.item() == pytest.approx(np_kd(s, t, y, tau, alpha), rel=1e-5)


def test_alpha_zero_is_cross_entropy_without_teacher():
    s, _, y = logits(1)
    s = torch.tensor(s, dtype=torch.float32)
    got = kd_loss(s, None, torch.tensor(y), tau=4.0, alpha=0.0)
    assert torch.equal(got, torch.nn.functional.cross_entropy(s, torch.tensor(y)))


def test_gradient_scale():
    """d/ds of tau^2 KL is tau (p_s - p_t) / B, and for large tau with zero-mean logits it tends to
    (s - t) / (K B) (Hinton et al., Sec. 2.1): the tau^2 factor keeps it independent of tau."""
    s, t, y = logits(2, b=8, k=10, scale=0.3)
    s -= s.mean(axis=1, keepdims=True)
    t -= t.mean(axis=1, keepdims=True)
    b, k = s.shape
    for tau in (1.0, 3.0, 10.0):
        st = torch.tensor(s, dtype=torch.float32, requires_grad=True)
        kd_loss(st, torch.tensor(t, dtype=torch.float32), torch.tensor(y), tau, alpha=1.0).backward()
        exact = tau * (np.exp(np_log_softmax(s / tau)) - np.exp(np_log_softmax(t / tau))) / b
        np.testing.assert_allclose(st.grad.numpy(), exact, rtol=1e-4, atol=1e-7)
    # At tau = 10 the high-temperature limit holds to within a few percent.
    np.testing.assert_allclose(st.grad.numpy(), (s - t) / (k * b), rtol=0.05, atol=1e-4)


def test_bf16_inputs_give_the_float32_answer():
    s, t, y = logits(3)
    s16, t16 = torch.tensor(s).bfloat16(), torch.tensor(t).bfloat16()
    y = torch.tensor(y)
    reference = np_kd(s16.double().numpy(), t16.double().numpy(), y.numpy(), 4.0, 0.9)
    got = kd_loss(s16, t16, y, 4.0, 0.9)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(reference, rel=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as it is called inside train.py's AMP step
        under_autocast = kd_loss(s16, t16, y, 4.0, 0.9)
    assert under_autocast.dtype == torch.float32
    assert under_autocast.item() == pytest.approx(reference, rel=1e-5)


@pytest.mark.parametrize("tau,alpha", [(0.5, 0.5), (11.0, 0.5), (4.0, -0.1), (4.0, 1.5),
                                       (float("nan"), 0.5), ("3", 0.5), (True, 0.5), (4.0, None)])
def test_out_of_range_or_not_a_number_is_refused(tau, alpha):
    """A boolean is not a number (True would otherwise be used as 1), nor is a string."""
    s, t, y = logits(4)
    with pytest.raises(ValueError, match=r"outside its range|must be a number in \["):
        kd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), tau, alpha)


def test_positive_alpha_needs_a_teacher():
    s, _, y = logits(5)
    with pytest.raises(ValueError, match="needs teacher logits"):
        kd_loss(torch.tensor(s), None, torch.tensor(y), 4.0, 0.5)


def test_space_is_the_papers():
    assert SPACE == {"tau": (float, 1.0, 10.0), "alpha": (float, 0.0, 1.0)}


def test_demo_shows_the_tau_squared_scale(capsys):
    """`python kd_loss.py`: with τ² the soft gradient keeps its scale over τ = 1..10; without, it
    falls by the factor τ² (100 at τ = 10)."""
    K.main()
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    with_sq = [float(r[1]) for r in rows]
    without = [float(r[2]) for r in rows]
    assert max(with_sq) / min(with_sq) < 2
    assert without[0] / without[-1] > 50
