"""Reduced precision on CPU: bf16/fp16 weights and autocast give finite outputs close to fp32."""

import pytest
import torch
from conftest import tiny_config

from modeling_pvt import PvtForImageClassification


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_half_precision_weights(dtype, attn_implementation):
    model = PvtForImageClassification(tiny_config()).eval()
    model.set_attn_implementation(attn_implementation)
    pixel_values = torch.randn(2, 3, 64, 96)
    reference = model(pixel_values).logits
    model = model.to(dtype)
    output = model(pixel_values.to(dtype), output_hidden_states=True)
    assert output.logits.dtype == dtype and all(h.dtype == dtype for h in output.hidden_states)
    assert torch.isfinite(output.logits).all()
    torch.testing.assert_close(output.logits.float(), reference, atol=0.1, rtol=0.1)


def test_cpu_autocast_bf16_forward_and_backward():
    model = PvtForImageClassification(tiny_config()).train()
    pixel_values, labels = torch.randn(2, 3, 64, 64), torch.tensor([1, 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(pixel_values, labels=labels)
    assert output.logits.dtype == torch.bfloat16 and torch.isfinite(output.loss)
    output.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
