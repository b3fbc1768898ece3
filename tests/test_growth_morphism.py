"""Function-preserving growth (essdsl/nas/growth.py): the loss on a fixed batch before and
after every growth step, in float64 and eval mode, equal within 1e-10 — for members that
combine by sum, mean and product, in both modes — and the optimizer state carried over."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from essdsl.compile import ModelConfig, build_model
from essdsl.lang.check import load_graph_text
from essdsl.nas.growth import GrowthError, carry_optimizer_state, grow_step, initial_state

SIZES = {"ninp": 6, "nhid": 5}
CONFIG = ModelConfig(vocab=11, search=True, dropout=0.1, dropouth=0.1, dropoutx=0.1, dropouti=0.1, dropoute=0.0)


def growing_space(combine: str, mode: str, transform: str = "project") -> str:
    keep = 1 if combine == "sum" and transform == "highway" else 2
    return f"""space g
ops unary = {{tanh, relu, sigmoid, identity, zero}}
defaults {{ transform {transform} combine {combine} keep {keep} norm batchnorm dim nhid }}
cell {{
  input x[t] : ninp
  state h[t-1] : nhid
  node s0 = tanh(linear(x[t], h[t-1]))
  grow s {{
    from h[t-1], s0, s ops unary
    start 1
    max 4
    every 1 epochs
    mode {mode}
  }}
  h[t] = highway(tanh, x[t], s, carry = h[t-1])
}}
"""


def fixed_batch():
    generator = torch.Generator().manual_seed(7)
    tokens = torch.randint(0, CONFIG.vocab, (6, 3), generator=generator)  # (T, B)
    targets = torch.randint(0, CONFIG.vocab, (6, 3), generator=generator)
    hidden_seed = torch.randn(1, 3, SIZES["nhid"], generator=generator, dtype=torch.float64)
    return tokens, targets, hidden_seed


def batch_loss(model, batch) -> float:
    tokens, targets, h0 = batch
    model.eval()
    with torch.no_grad():
        logits, _ = model(tokens, [h0.clone()])
        return F.cross_entropy(logits.reshape(-1, CONFIG.vocab), targets.reshape(-1)).item()


def build(graph):
    return build_model(graph, CONFIG).double()


def scramble(model, seed):
    """Move every weight and architecture logit away from its initialisation (and give the
    BatchNorms statistics), as training would, so the test does not rest on initial values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * (1.0 if "arch." in name else 0.3))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=generator, dtype=b.dtype) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(1 + torch.rand(b.shape, generator=generator, dtype=b.dtype))


@pytest.mark.parametrize("mode", ["then_prune", "interleaved"])
@pytest.mark.parametrize("combine", ["sum", "mean", "product"])
def test_every_growth_step_keeps_the_loss(combine, mode):
    torch.manual_seed(0)
    base = load_graph_text(growing_space(combine, mode), sizes=SIZES)
    state, graph = initial_state(base), base
    model = build(graph)
    batch = fixed_batch()
    steps = 0
    while state.size < 4:
        scramble(model, seed=steps)
        before = batch_loss(model, batch)
        step = grow_step(model, graph, base, state, build)
        if mode == "interleaved":
            assert set(step.pruned) == {f"s{i}" for i in range(1, state.size + 1)} - set(state.pruned)
            before = batch_loss(step.before_prune, batch)  # pruning changes the function; growing must not
        after = batch_loss(step.model, batch)
        assert abs(after - before) <= 1e-10, (combine, mode, state.size, before, after)
        model, graph, state = step.model, step.graph, step.state
        assert f"s{state.size}" in graph.dag and graph.dag.has_edge(f"s{state.size}", "h[t]")
        steps += 1
    assert steps == 3
    with pytest.raises(GrowthError, match="maximum"):
        grow_step(model, graph, base, state, build)


def test_the_new_rows_are_zero_and_learn_at_once():
    base = load_graph_text(growing_space("product", "then_prune"), sizes=SIZES)
    model = build(base)
    scramble(model, 1)
    step = grow_step(model, base, base, initial_state(base), build)
    old_w, new_w = model.state_dict()["cell.h_t_w0"], step.model.state_dict()["cell.h_t_w0"]
    # rows: x[t] (6), s1 (5), then the new s2 (5)
    assert torch.equal(new_w[:11], old_w) and torch.count_nonzero(new_w[11:]) == 0
    step.model.train()
    tokens, targets, h0 = fixed_batch()
    logits, _ = step.model(tokens, [h0])
    F.cross_entropy(logits.reshape(-1, CONFIG.vocab), targets.reshape(-1)).backward()
    grads = dict(step.model.named_parameters())
    assert grads["cell.h_t_w0"].grad[11:].abs().sum() > 0  # the new member's rows learn from the first step


def test_a_highway_template_keeps_the_loss_too():
    base = load_graph_text(growing_space("sum", "then_prune", transform="highway"), sizes=SIZES)
    model = build(base)
    scramble(model, 2)
    step = grow_step(model, base, base, initial_state(base), build)
    assert abs(batch_loss(step.model, fixed_batch()) - batch_loss(model, fixed_batch())) <= 1e-10


def test_optimizer_state_follows_the_parameters():
    base = load_graph_text(growing_space("sum", "then_prune"), sizes=SIZES)
    model = build(base)
    params = dict(model.named_parameters())
    optimizer = torch.optim.Adam(params.values(), lr=1e-3)
    tokens, targets, h0 = fixed_batch()
    logits, _ = model(tokens, [h0])
    F.cross_entropy(logits.reshape(-1, CONFIG.vocab), targets.reshape(-1)).backward()
    optimizer.step()
    step = grow_step(model, base, base, initial_state(base), build)
    new_params = dict(step.model.named_parameters())
    new_optimizer = torch.optim.Adam(new_params.values(), lr=1e-3)
    carry_optimizer_state(optimizer, params, new_optimizer, new_params, step.maps)
    old_moment = optimizer.state[params["cell.h_t_w0"]]["exp_avg"]
    new_moment = new_optimizer.state[new_params["cell.h_t_w0"]]["exp_avg"]
    assert torch.equal(new_moment[:11], old_moment) and torch.count_nonzero(new_moment[11:]) == 0
    assert torch.equal(new_optimizer.state[new_params["arch.s1_ops"]]["exp_avg_sq"], optimizer.state[params["arch.s1_ops"]]["exp_avg_sq"])
    assert new_params["arch.s2_ops"] not in new_optimizer.state  # a new parameter starts with no state
    new_optimizer.step()  # and the optimizer takes a step with the carried state
