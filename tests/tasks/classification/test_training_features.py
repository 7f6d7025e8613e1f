"""Gradient checkpointing, stochastic depth and dropout."""

import pytest
import torch
from conftest import tiny_config

import modeling_pvt.modeling_pvt as pvt_modeling
from modeling_pvt import PvtForImageClassification
from modeling_pvt.modeling_pvt import PvtDropPath


def saved_activation_bytes(model, pixel_values, labels) -> int:
    """Bytes autograd keeps for backward during one forward: the memory that checkpointing trades for compute."""
    saved = 0

    def pack(tensor):
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(pixel_values, labels=labels).loss
    loss.backward()
    return saved


def gradients(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_activation_checkpointing_keeps_gradients_and_saves_memory():
    model = PvtForImageClassification(tiny_config()).train()
    pixel_values, labels = torch.randn(4, 3, 96, 96), torch.tensor([0, 1, 2, 3])

    plain_bytes = saved_activation_bytes(model, pixel_values, labels)
    plain = gradients(model)
    model.zero_grad()

    model.activation_checkpointing_enable()
    assert all(block.gradient_checkpointing for block in model.modules() if hasattr(block, "gradient_checkpointing"))
    checkpointed_bytes = saved_activation_bytes(model, pixel_values, labels)
    checkpointed = gradients(model)

    assert model.is_activation_checkpointing
    assert plain.keys() == checkpointed.keys() and len(plain) == len(list(model.parameters()))
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)
    assert checkpointed_bytes < 0.6 * plain_bytes, (checkpointed_bytes, plain_bytes)


def test_stochastic_depth_rises_linearly_and_is_off_in_eval():
    config = tiny_config(drop_path_rate=0.3)  # 5 blocks in total
    model = PvtForImageClassification(config)
    rates = [m.drop_prob for m in model.modules() if isinstance(m, PvtDropPath)]
    assert rates == pytest.approx([0.0, 0.075, 0.15, 0.225, 0.3])

    pixel_values = torch.randn(2, 3, 64, 64)
    model.eval()
    torch.testing.assert_close(model(pixel_values).logits, model(pixel_values).logits, atol=0, rtol=0)
    model.train()
    assert not torch.allclose(model(pixel_values).logits, model(pixel_values).logits)


def test_drop_path_scales_kept_samples():
    drop_path = PvtDropPath(0.5).train()
    hidden_states = torch.ones(1000, 3, 4)
    dropped = drop_path(hidden_states)
    per_sample = dropped[:, 0, 0]
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}
    assert 0.4 < per_sample.eq(0).float().mean() < 0.6
    assert torch.equal(drop_path.eval()(hidden_states), hidden_states)


def test_dropout_is_active_only_in_training():
    model = PvtForImageClassification(tiny_config(hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2))
    pixel_values = torch.randn(2, 3, 64, 64)
    model.train()
    assert not torch.allclose(model(pixel_values).logits, model(pixel_values).logits)
    model.eval()
    assert torch.equal(model(pixel_values).logits, model(pixel_values).logits)


@pytest.fixture
def chunked_mlps(monkeypatch):
    """MLP activations above 2 KB run in chunks of 40 rows of this tiny model (the real threshold is 32 MiB); the
    list holds the first dimension of every MLP call."""
    monkeypatch.setattr(pvt_modeling, "MLP_CHUNKING_BYTES", 2048)
    monkeypatch.setattr(pvt_modeling, "MLP_CHUNK_BYTES", 40 * 16 * 4)  # stage 1: 16 hidden features of 4 bytes
    calls = []
    unchunked_forward = pvt_modeling.PvtMlp.unchunked_forward

    def counted(self, hidden_states):
        calls.append(hidden_states.shape[0])
        return unchunked_forward(self, hidden_states)

    monkeypatch.setattr(pvt_modeling.PvtMlp, "unchunked_forward", counted)
    return calls


def unchunked(monkeypatch):
    monkeypatch.setattr(pvt_modeling, "MLP_CHUNKING_BYTES", 2**62)


def test_wide_mlp_activations_run_in_row_chunks_with_the_same_outputs(chunked_mlps, monkeypatch):
    model = PvtForImageClassification(tiny_config()).eval()
    pixel_values = torch.randn(3, 3, 64, 64)
    with torch.inference_mode():
        chunked = model(pixel_values).logits
        # Stage 1: 3 images x 16x16 tokens = 768 rows -> 19 chunks of 40 and one of 8.
        assert chunked_mlps[:20] == [40] * 19 + [8]
        unchunked(monkeypatch)
        plain = model(pixel_values).logits
    torch.testing.assert_close(chunked, plain, atol=1e-6, rtol=1e-5)


def test_training_runs_each_mlp_whole(chunked_mlps):
    """Chunks would have to be recomputed for the backward pass: that ran slower than native on a busy machine."""
    model = PvtForImageClassification(tiny_config()).train()
    model(torch.randn(3, 3, 64, 64), labels=torch.tensor([0, 1, 2])).loss.backward()
    assert chunked_mlps == [3] * 5  # one call per block, batch first
    with torch.no_grad():
        model(torch.randn(3, 3, 64, 64))
    assert len(chunked_mlps) > 5 + 20


def test_a_hooked_mlp_layer_sees_one_call_per_forward(chunked_mlps):
    model = PvtForImageClassification(tiny_config()).eval()
    seen = []
    model.pvt.encoder.stages[0].blocks[0].mlp.fc1.register_forward_hook(lambda m, i, out: seen.append(out.shape))
    with torch.inference_mode():
        model(torch.randn(3, 3, 64, 64))
    assert seen == [(3, 256, 16)]
    # Stage 1 ran whole (batch first), stage 2's 3 x 64 rows of 32 hidden features still ran in chunks of 20.
    assert chunked_mlps[:11] == [3] + [20] * 9 + [12]
