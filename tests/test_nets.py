"""ActorCritic: heads, shapes, initialisation, and that act() samples from the same pi as dist()."""
import math

import pytest
import torch
from torch.distributions import Categorical, Independent, Normal

torch.set_num_threads(1)

from minippo.envs import CartPole  # noqa: E402
from minippo.nets import ActorCritic, layer_init, mlp  # noqa: E402


def test_layer_init_is_orthogonal_with_gain():
    torch.manual_seed(0)
    layer = layer_init(torch.nn.Linear(16, 16), std=2.0, bias=0.5)
    w = layer.weight.detach()
    torch.testing.assert_close(w @ w.T, 4.0 * torch.eye(16), atol=1e-5, rtol=0)
    assert torch.all(layer.bias == 0.5)


def test_mlp_layout_and_output_gain():
    net = mlp(4, (8, 8), 2, out_std=0.01)
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(4, 8), (8, 8), (8, 2)]
    assert sum(isinstance(m, torch.nn.Tanh) for m in net) == 2
    last = linears[-1].weight.detach()
    torch.testing.assert_close(last @ last.T, 1e-4 * torch.eye(2), atol=1e-7, rtol=0)


def test_discrete_shapes_and_near_uniform_initial_policy():
    torch.manual_seed(0)
    ac = ActorCritic(4, num_actions=3)
    obs = torch.randn(7, 4)
    d = ac.dist(obs)
    assert isinstance(d, Categorical)
    torch.testing.assert_close(d.probs, torch.full((7, 3), 1 / 3), atol=0.02, rtol=0)
    action, logp, value = ac.act(obs)
    assert action.shape == (7,) and action.dtype == torch.long
    assert logp.shape == value.shape == (7,)
    assert not logp.requires_grad and not value.requires_grad
    lp, ent, v = ac.evaluate(obs, action)
    assert lp.shape == ent.shape == v.shape == (7,)
    assert lp.requires_grad and v.requires_grad
    torch.testing.assert_close(lp.detach(), logp)
    torch.testing.assert_close(v.detach(), value)
    torch.testing.assert_close(ac.value(obs).detach(), value)


def test_gaussian_head_sums_over_action_dims():
    torch.manual_seed(0)
    ac = ActorCritic(3, action_dim=2, log_std_init=-0.5)
    obs = torch.randn(5, 3)
    d = ac.dist(obs)
    assert isinstance(d, Independent)
    action, logp, value = ac.act(obs)
    assert action.shape == (5, 2) and action.dtype == torch.float32
    assert logp.shape == value.shape == (5,)
    mean = ac.actor(obs).detach()
    per_dim = Normal(mean, math.exp(-0.5))
    torch.testing.assert_close(logp, per_dim.log_prob(action).sum(-1))
    _, ent, _ = ac.evaluate(obs, action)
    torch.testing.assert_close(ent.detach(), per_dim.entropy().sum(-1))
    assert any(p is ac.log_std for p in ac.policy_parameters())


def test_act_samples_from_pi():
    """The Gumbel-max sampler in act() draws with the probabilities dist() reports."""
    torch.manual_seed(0)
    ac = ActorCritic(2, num_actions=3, orthogonal_init=False)
    with torch.no_grad():
        ac.actor[-1].bias.copy_(torch.tensor([1.0, 0.0, -1.0]))
    obs = torch.zeros(20_000, 2)
    probs = ac.dist(obs[:1]).probs[0].detach()
    action, logp, _ = ac.act(obs)
    freq = torch.bincount(action, minlength=3).float() / len(action)
    torch.testing.assert_close(freq, probs, atol=0.015, rtol=0)  # ~4 standard errors
    torch.testing.assert_close(logp, probs.log()[action])


def test_policy_and_value_parameters_are_disjoint():
    ac = ActorCritic(4, num_actions=2)
    pol = {id(p) for p in ac.policy_parameters()}
    val = {id(p) for p in ac.value_parameters()}
    assert not pol & val
    assert pol | val == {id(p) for p in ac.parameters()}


def test_from_env_and_orthogonal_init_switch():
    ac = ActorCritic.from_env(CartPole(2, seed=0), hidden=(32,))
    assert ac.discrete and ac.num_actions == 2 and ac.obs_dim == 4
    torch.manual_seed(0)
    default = ActorCritic(4, num_actions=2, orthogonal_init=False)
    w = default.actor[0].weight.detach()
    assert w.abs().max() <= 1 / math.sqrt(4) + 1e-6  # PyTorch's default uniform(-1/sqrt(in), ..)


@pytest.mark.parametrize("kwargs, match", [
    (dict(), "exactly one"),
    (dict(num_actions=2, action_dim=2), "exactly one"),
    (dict(num_actions=0), "num_actions"),
    (dict(num_actions=2, hidden=()), "hidden"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ActorCritic(4, **kwargs)


def test_policy_terms_match_torch_distributions():
    torch.manual_seed(0)
    ac = ActorCritic(4, num_actions=3, orthogonal_init=False)
    obs, action = torch.randn(9, 4), torch.randint(0, 3, (9,))
    logp, ent = ac.policy_terms(obs, action)
    d = Categorical(logits=ac.actor(obs))
    torch.testing.assert_close(logp, d.log_prob(action))
    torch.testing.assert_close(ent, d.entropy())
