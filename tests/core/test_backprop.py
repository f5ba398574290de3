"""The hand-written quantized back-propagation (work B) against torch autograd, and against its own definition."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnncl.core.backprop import Bits, QuantizedBackprop
from bnncl.models import BackboneConfig, build_model
from bnncl.simulation.steps import TorchConv, block_params
from fixtures import F32_UNIT, assert_within_float32, float32_chain_bound, reduction_terms


def trainable_part(boundary: bool, seed: int = 0, activation: str = "approx"):
    cfg = BackboneConfig(input_shape=(12, 12, 1), num_classes=5, stem_channels=8, stages=((8, 1, 1), (16, 2, 2)),
                         binary_boundary="block2" if boundary else None, activation=activation)
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():  # random per-channel vectors, latent weights inside and outside [-1, 1]
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_((1.0 if name.endswith(("bn.weight", "scale")) else 0.0) + 0.3 * torch.randn_like(p))
            elif p.dim() == 4 and "block" in name:
                p.copy_(0.8 * torch.randn_like(p))
    _, trainable = model.split("block2")
    trainable.train()
    return model, trainable


def latents(boundary, n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, 12, 12, generator=g)
    return torch.where(x >= 0, 1.0, -1.0) if boundary else x


@pytest.mark.parametrize("boundary", [True, False])
@pytest.mark.parametrize("activation", ["approx", "ste"])
@pytest.mark.parametrize("conv", ["numpy", "torch"])
def test_32_bits_equals_autograd(boundary, activation, conv):
    model, trainable = trainable_part(boundary, activation=activation)
    x, y = latents(boundary), torch.tensor([0, 1, 2, 3, 4, 0])
    names = [n for n, _ in trainable.named_children()]
    blocks = [block_params(n, trainable.get_submodule(n)) for n in names if n.startswith("block")]
    bp = QuantizedBackprop(blocks, trainable.get_submodule("head").weight.detach().numpy(), Bits(),
                           TorchConv() if conv == "torch" else None)
    # the oracle: torch autograd in float64 on a copy of the same model (block_params shares memory with
    # `trainable`); the hand-written float32 backward is held to float32 rounding through the network
    import copy

    ref = copy.deepcopy(trainable).double()
    logits = ref(x.double())
    loss_ref = F.cross_entropy(logits, y)
    loss_ref.backward()
    terms = reduction_terms(trainable, x, backward=True)
    loss = bp.loss_and_backward(x.numpy().copy(), y.numpy())
    # the loss moves by at most twice the logits' largest error (|d loss / d logit| sums to at most 2 per image)
    logit_bound = float32_chain_bound(reduction_terms(trainable, x), logits.abs().max().item())
    assert abs(loss - loss_ref.item()) <= 2 * logit_bound
    pairs = [("head", bp.head_grad, ref.head.weight.grad)]
    for b in blocks:
        module = ref.get_submodule(b.name)
        pairs += [(f"{b.name}.{key}", g, module.get_parameter(key).grad) for key, g in b.grads.items()]
        # running statistics: the batch's mean and variance, one pass of the forward
        pairs.append((f"{b.name}.running_var", b.running_var, module.bn.running_var))
    for name, ours, theirs in pairs:
        theirs = theirs.numpy()
        assert_within_float32(ours, theirs, float32_chain_bound(terms, np.abs(theirs).max()), name)
    n_params = sum(1 for n, p in ref.named_parameters() if not n.startswith("head"))
    assert len(pairs) == 1 + n_params + len(blocks)  # every trainable parameter of every block has its gradient

def test_low_bits_quantize_every_op_with_its_width(monkeypatch):
    """At q_f 6, q_b 12, q_bin 8: every forward value goes through a q_f quantizer, every gradient through q_b (conv
    weight gradients q_bin), and each gradient is the quantized float gradient of the quantized values it comes from."""
    import bnncl.core.backprop as qb_mod
    from bnncl.core.affine import quantize as real_quantize

    calls = []

    def spy(x, bits, lo=None, hi=None, **kw):
        out = real_quantize(x, bits, lo, hi, **kw)
        calls.append((kw.get("where"), bits, np.array(x, copy=True), out))
        return out

    monkeypatch.setattr(qb_mod, "quantize", spy)
    model, trainable = trainable_part(True, seed=3)
    blocks = [block_params(n, trainable.get_submodule(n)) for n in ("block2", "block3")]
    head = trainable.get_submodule("head").weight.detach().numpy()
    bp = QuantizedBackprop(blocks, head, Bits(q_f=6, q_b=12, q_bin=8))
    bp.loss_and_backward(latents(True).numpy().copy(), np.array([0, 1, 2, 3, 4, 0]))
    by_where = {w: (b, x, out) for w, b, x, out in calls}
    for where, bits, _, _ in calls:
        if "conv weight gradient" in where:
            assert bits == 8, where
        elif where == "logit gradient":  # docs/method.md §5: the logit gradient is a forward quantity, at q_f
            assert bits == 6, where
        elif "gradient" in where:
            assert bits == 12, where
        else:
            assert bits == 6, where
    for b in ("block2", "block3"):  # every non-BN op of both blocks is quantized on the way forward
        for op in ("conv weights", "conv output", "shortcut output", "residual add", "rprelu shift_in", "prelu output",
                   "rprelu output"):
            assert f"{b}.{op}" in by_where, f"{b}.{op}"
    assert "block3.shift output" in by_where and "block3.input gradient" in by_where
    # the head gradient is Q_qb of the float product of the q_f values it was computed from
    feat, d = by_where["head input"][2], by_where["logit gradient"][2]
    np.testing.assert_array_equal(bp.head_grad, real_quantize(d.T @ feat, 12))
    for b in blocks:  # stored gradients sit on their grids (a level times the step plus the offset: two roundings)
        for key, g in b.grads.items():
            if not key.startswith("bn."):
                assert_within_float32(real_quantize(g, 8 if key == "conv.weight" else 12), g,
                                      4 * F32_UNIT * np.abs(g).max(), f"{b.name}.{key}")


@pytest.mark.parametrize("rebinarize", [True, False])
def test_sgd_step_by_hand(rebinarize):
    """One update at 32 bits, computed by hand: re-binarized (work B) or plain for binary latent weights, plain SGD for
    the rest, BN included."""
    model, trainable = trainable_part(False, seed=5)
    blocks = [block_params(n, trainable.get_submodule(n)) for n in ("block2", "block3")]
    head = trainable.get_submodule("head").weight.detach().numpy()
    bp = QuantizedBackprop(blocks, head, Bits())
    bp.loss_and_backward(latents(False).numpy().copy(), np.array([0, 1, 2, 3, 4, 0]))
    before = {b.name: (b.weight.copy(), b.shift.copy(), b.bn_weight.copy(), b.slope.copy(), dict(b.grads))
              for b in blocks}
    h0, gh = head.copy(), bp.head_grad.copy()
    bp.sgd_step(0.1, rebinarize=rebinarize)

    def assert_update(new, old, grad, what, clip=False):
        """new == old - 0.1 grad (clipped to [-1, 1] for the latent weights), the exact update in float64: within
        the float32 roundings of the learning rate, the product and the subtraction (the clip is exact)."""
        old, grad = np.asarray(old, np.float64), np.asarray(grad, np.float64)
        exact = old - 0.1 * grad
        exact = np.clip(exact, -1, 1) if clip else exact
        assert_within_float32(new, exact, 3 * F32_UNIT * (np.abs(old) + 0.1 * np.abs(grad)), what)

    assert_update(head, h0, gh, "head")
    for b in blocks:
        w0, s0, g0, sl0, grads = before[b.name]
        base = np.where(w0 >= 0, 1.0, -1.0) if rebinarize else w0
        assert_update(b.weight, base, grads["conv.weight"], f"{b.name} latent weights", clip=True)
        assert_update(b.shift, s0, grads["shift.bias"], f"{b.name} shift")
        assert_update(b.bn_weight, g0, grads["bn.weight"], f"{b.name} BN weight")
        assert_update(b.slope, sl0, grads["act.prelu.weight"], f"{b.name} slope")
