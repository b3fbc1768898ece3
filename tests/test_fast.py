"""The fast paths compute what the eager generated module computes.

torch.compile of one time step: same logits, hidden state and gradients (arch
weights included) as the eager step, and the eager module is back after
uncompile_step.  bf16 autocast keeps architecture weights in fp32.
SavedActivations counts the bytes autograd keeps for backward.
"""

from pathlib import Path

import pytest
import torch

from essdsl.lang.check import load_graph
from essdsl.compile import ModelConfig, build_model
from essdsl.compile.fast import (CompileInfo, SavedActivations, _with_fallback, autocast, compile_loss, compile_step,
                                 is_compiled, uncompile_step)
from essdsl.nas.bilevel import BilevelOptimizer, frozen, split_parameters
from essdsl.nas.runconfig import RunConfig
from essdsl.tasks.lm import cross_entropy, evaluate_loss

ROOT = Path(__file__).resolve().parent.parent
NO_DROPOUT = dict(dropout=0, dropouth=0, dropoutx=0, dropouti=0, dropoute=0)


def _model(space: str, seed: int = 0):
    torch.manual_seed(seed)
    graph = load_graph(ROOT / space, {"ninp": 8, "nhid": 8})
    model = build_model(graph, ModelConfig(vocab=20, search=True, **NO_DROPOUT)).train()
    with torch.no_grad():
        for p in model.arch_parameters():
            p.normal_(0, 1.5)
    return model


def _run(model, tokens):
    model.zero_grad(set_to_none=True)
    logits, hidden = model(tokens, model.init_hidden(tokens.size(1)))
    logits.square().mean().backward()
    return logits.detach(), [h.detach() for h in hidden], {n: p.grad.clone() for n, p in model.named_parameters()}


def test_compiled_step_matches_eager():
    # float64: fused kernels reassociate sums, and BatchNorm over a batch of 3
    # amplifies float32 rounding to ~1e-6; in float64 any real difference shows.
    torch.manual_seed(1)
    tokens = torch.randint(0, 20, (4, 5))
    eager = _model("spaces/ess_joint.space").double()
    fast = _model("spaces/ess_joint.space").double()
    fast.load_state_dict(eager.state_dict())
    messages = []
    info = compile_step(fast, report=messages.append)
    assert is_compiled(fast)
    expected = _run(eager, tokens)
    got = _run(fast, tokens)
    assert info.cold_seconds > 0 or any("failed" in m for m in messages), messages
    torch.testing.assert_close(got[0], expected[0], atol=1e-10, rtol=1e-8)
    for a, b in zip(got[1], expected[1]):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)
    for name, grad in expected[2].items():
        torch.testing.assert_close(got[2][name], grad, atol=1e-10, rtol=1e-7, msg=name)
    uncompile_step(fast)
    assert not is_compiled(fast)


def test_arch_gradient_of_a_compiled_step_with_frozen_weights_matches_eager():
    # The first-order architecture step freezes the model weights so that the
    # compiled backward leaves out their gradients; the arch gradient must not change.
    torch.manual_seed(2)
    tokens, targets = torch.randint(0, 20, (4, 5)), torch.randint(0, 20, (4, 5))
    eager = _model("spaces/darts_rnn.space").double()
    fast = _model("spaces/darts_rnn.space").double()
    fast.load_state_dict(eager.state_dict())
    compile_step(fast)
    grads = []
    for model in (eager, fast):
        weights, arch = split_parameters(model)

        def loss_fn(tok, tgt, hidden, model=model):
            logits, new_hidden = model(tok, hidden)
            return cross_entropy(logits, tgt), [h.detach() for h in new_hidden]

        hidden = [h.double() for h in model.init_hidden(5)]
        bilevel = BilevelOptimizer(weights, arch, {}, RunConfig(order="first"))
        for _ in range(2):  # the second call runs the already-compiled frozen variant
            got, _, _ = bilevel.arch_gradient(loss_fn, (tokens, targets, hidden), (tokens, targets, hidden), 1.0)
        assert all(p.requires_grad for p in weights.values())  # unfrozen afterwards
        grads.append(got)
    for expected, got in zip(*grads):
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-7)


def test_a_search_compiles_one_variant_per_kind_of_backward():
    # ess_joint reads states up to three steps back: a segment's first steps see
    # detached hidden states, and compiled as they come each would be one more
    # variant (x2 for arch-only vs full backward), up to torch's limit of 8.
    # Expected: first step and later steps, for each of the two kinds of backward.
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    torch._dynamo.reset()  # count this test's variants only
    torch.manual_seed(3)
    model = _model("spaces/ess_joint.space")
    messages = []
    info = compile_step(model, report=messages.append)
    weights, arch = split_parameters(model)
    tokens, targets = torch.randint(0, 20, (6, 3)), torch.randint(0, 20, (6, 3))

    def loss_fn(tok, tgt, hidden):
        logits, new_hidden = model(tok, hidden)
        return cross_entropy(logits, tgt), [h.detach() for h in new_hidden]

    bilevel = BilevelOptimizer(weights, arch, {}, RunConfig(order="second"))
    hidden = model.init_hidden(3)
    for _ in range(2):  # second order: full and arch-only backward passes; then a weight step
        bilevel.arch_gradient(loss_fn, (tokens, targets, hidden), (tokens, targets, hidden), 1.0)
        loss, hidden = loss_fn(tokens, targets, hidden)
        loss.backward()
    assert len(_debug_get_cache_entry_list(type(model).step.__code__)) == 4
    # each variant is reported as it compiles, not only the first
    assert info.variants == 4 and info.compile_seconds >= info.cold_seconds > 0
    assert messages[0].startswith("compiled one time step with torch.compile in ")
    assert [m.split(" in ")[0] for m in messages[1:]] == [
        f"compiled variant {n} of one time step (for another batch size, evaluation, or inputs that need gradients differently)" for n in (2, 3, 4)]


def test_frozen_restores_requires_grad_even_after_an_error():
    a = torch.nn.Parameter(torch.ones(2))
    b = torch.nn.Parameter(torch.ones(2), requires_grad=False)
    with pytest.raises(ValueError):
        with frozen([a, b]):
            assert not a.requires_grad and not (a * 2).requires_grad
            raise ValueError("boom")
    assert a.requires_grad and not b.requires_grad


def test_compile_step_rejects_reference_interpreter():
    graph = load_graph(ROOT / "genotypes/gru.space", {"ninp": 8, "nhid": 8})
    reference = build_model(graph, ModelConfig(vocab=20, search=False, **NO_DROPOUT), impl="reference")
    with pytest.raises(TypeError, match="generated"):
        compile_step(reference)


def test_bf16_autocast_keeps_arch_weights_fp32_and_stays_close():
    model = _model("spaces/darts_rnn.space")
    tokens = torch.randint(0, 20, (4, 3))
    reference, _ = model(tokens, model.init_hidden(3))
    with autocast("cpu", True):
        low, _ = model(tokens, model.init_hidden(3))
    assert all(p.dtype == torch.float32 for p in model.arch_parameters())
    assert low.dtype == torch.bfloat16
    # bf16 has 8 bits of mantissa: logits agree to about 1e-2
    torch.testing.assert_close(low.float(), reference, atol=5e-2, rtol=5e-2)


def test_saved_activations_counts_bytes_kept_for_backward():
    weight = torch.randn(64, 32, requires_grad=True)
    x = torch.randn(16, 64)
    with SavedActivations() as saved:
        y = torch.tanh(x @ weight)  # mm saves x (weight's gradient needs it); tanh saves its output
    y.sum().backward()
    expected = x.numel() * 4 + y.numel() * 4
    assert saved.bytes == expected
    with SavedActivations() as none_saved:
        with torch.no_grad():
            torch.tanh(x @ weight)
    assert none_saved.bytes == 0


def test_compiled_loss_equals_cross_entropy_across_lengths():
    messages = []
    loss_fn = compile_loss(cross_entropy, report=messages.append)
    for length in (5, 7, 3):  # the BPTT length varies per step: dynamic shapes, no wrong reuse
        logits = torch.randn(length, 4, 30, dtype=torch.float64, requires_grad=True)
        targets = torch.randint(0, 30, (length, 4))
        expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 30), targets.reshape(-1))
        (expected_grad,) = torch.autograd.grad(expected, logits)
        got = loss_fn(logits, targets)
        (got_grad,) = torch.autograd.grad(got, logits)
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(got_grad, expected_grad, atol=1e-12, rtol=1e-10)
    assert len(messages) == 1 and "compiled the loss" in messages[0]


def test_a_failed_compile_falls_back_to_eager_once_and_says_so():
    def broken(x):
        raise RuntimeError("no C++ compiler found\nmore detail")

    failures, messages = [], []
    call = _with_fallback(lambda x: x + 1, broken, CompileInfo("default"), "the loss", messages.append,
                          on_failure=lambda: failures.append(1))  # fmt: skip
    assert [call(1), call(2), call(3)] == [2, 3, 4]
    assert failures == [1]
    assert messages == ["torch.compile failed on the loss (no C++ compiler found); running it eagerly instead (--no-compile skips the attempt)"]
    info = CompileInfo("default")
    ok = _with_fallback(lambda x: x + 1, lambda x: x + 1, info, "one time step", messages.append)
    assert ok(1) == 2 and ok(2) == 3 and info.cold_seconds > 0
    assert messages[-1].startswith("compiled one time step with torch.compile in ")
    assert info.variants == 1 and len(messages) == 2  # later calls compile nothing: no more messages


def test_a_later_call_that_compiles_another_variant_is_reported():
    def double(x):
        return x * 2

    messages, info = [], CompileInfo("default")
    call = _with_fallback(double, torch.compile(double), info, "the loss", messages.append)
    x = torch.ones(3)
    call(x)
    call(x + 1)  # same variant
    assert len(messages) == 1
    call(x.requires_grad_())  # needs a gradient: a variant of its own
    assert info.variants == 2 and len(messages) == 2
    assert messages[1].startswith("compiled variant 2 of the loss (for another batch size")
    assert info.compile_seconds > info.cold_seconds > 0


def test_evaluation_at_other_batch_sizes_compiles_one_variant_each_and_no_more():
    # torch's automatic dynamic shapes made the second batch size a dynamic variant
    # whose guards failed on every later call: a recompile per evaluation, up to
    # torch's limit of 8, and eager after it.  Static shapes: one variant per size.
    torch._dynamo.reset()
    model = _model("spaces/ess_joint.space")
    data = [torch.randint(0, 20, (13, b), generator=torch.Generator().manual_seed(b)) for b in (5, 7)]
    expected = [evaluate_loss(model, d, 6) for d in data]
    info = compile_step(model)
    for _ in range(2):
        assert [evaluate_loss(model, d, 6) for d in data] == pytest.approx(expected, rel=1e-5)
    assert info.variants == 2


def test_a_later_variant_that_fails_to_compile_falls_back_to_eager_and_other_errors_pass_through():
    from torch._dynamo.exc import BackendCompilerFailed

    def compiled(x):
        if x == 2:
            raise BackendCompilerFailed(compiled, RuntimeError("C++ compile error in the eval variant"), None)
        if x == 3:
            raise ValueError("a real error of the computation")
        return x + 1

    failures, messages = [], []
    call = _with_fallback(lambda x: x + 10, compiled, CompileInfo("default"), "one time step", messages.append,
                          on_failure=lambda: failures.append(1))  # fmt: skip
    assert call(1) == 2  # compiled
    with pytest.raises(ValueError, match="real error"):
        call(3)  # not a compile failure: raised, and the compiled path stays
    assert call(1) == 2 and failures == []
    assert call(2) == 12  # a compile failure: eager from now on
    assert call(1) == 11 and failures == [1]
    assert messages[-1].startswith("torch.compile failed on one time step (C++ compile error in the eval variant)")
    assert messages[-1].endswith("running it eagerly instead (--no-compile skips the attempt)")
