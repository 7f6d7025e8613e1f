"""PyTorch Pyramid Vision Transformer (PVT v1): "Pyramid Vision Transformer: A Versatile Backbone for Dense
Prediction without Convolutions", Wang et al., ICCV 2021. Also the Hub remote code: imports only torch,
transformers, the standard library and `.configuration_pvt`."""

import inspect
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BackboneOutput,
    BaseModelOutputWithPooling,
    ImageClassifierOutput,
    SemanticSegmenterOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import cached_file

from .configuration_pvt import PvtConfig
from .cpu_fast_paths import ONEDNN, cpu_fast_paths, cpu_inference_linear_backend, detect_cpu_capabilities


class PvtPatchEmbeddings(nn.Module):
    """Strided-conv patchify + LayerNorm + position embeddings resized from the grid they were trained on.

    The last stage's position embeddings store a CLS slot first (as every PVT checkpoint does); it is used, never
    resized, when that stage prepends the CLS token, and skipped by the dense models, which have no CLS token."""

    def __init__(self, config, stage_index: int, use_cls_token: bool):
        super().__init__()
        in_channels = config.num_channels if stage_index == 0 else config.hidden_sizes[stage_index - 1]
        hidden_size = config.hidden_sizes[stage_index]
        patch_size = config.patch_sizes[stage_index]
        self.grid = config.position_grid(stage_index)
        is_last_stage = stage_index == config.num_stages - 1
        self.num_cls_slots = int(is_last_stage)
        self.num_prefix_tokens = int(is_last_stage and use_cls_token)

        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(hidden_size, eps=config.conv_layer_norm_eps)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size)) if self.num_prefix_tokens else None
        self.position_embeddings = nn.Parameter(
            torch.zeros(1, self.num_cls_slots + self.grid[0] * self.grid[1], hidden_size)
        )
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, feature_map: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        embeddings = self.proj(feature_map)
        height, width = embeddings.shape[-2:]
        embeddings = self.norm(embeddings.flatten(2).transpose(1, 2))  # (B, H*W, C)
        if self.cls_token is not None:
            embeddings = torch.cat((self.cls_token.expand(embeddings.shape[0], -1, -1), embeddings), dim=1)
        return self.dropout(embeddings + self.resized_position_embeddings(height, width)), height, width

    def resized_position_embeddings(self, height: int, width: int) -> torch.Tensor:
        prefix = self.position_embeddings[:, : self.num_prefix_tokens]
        grid = self.position_embeddings[:, self.num_cls_slots :]
        # Traced graphs always resize (bilinear to the same size is exact): the same graph then serves every input
        # size, instead of a shape guard that recompiles or specialises an exported model to one resolution.
        if torch.compiler.is_compiling() or torch.compiler.is_exporting() or (height, width) != self.grid:
            grid = grid.reshape(1, *self.grid, -1).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(height, width), mode="bilinear").flatten(2).transpose(1, 2)
        return torch.cat((prefix, grid), dim=1) if self.num_prefix_tokens else grid


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    attn_weights = torch.matmul(query, key.transpose(-2, -1)) * scaling
    # Softmax of bfloat16/float16 already accumulates in float32 (CPU and CUDA); asking for a float32 result and
    # casting back would only add two copies of the largest tensor here, for the same rounded values.
    attn_weights = attn_weights.softmax(dim=-1)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    return torch.matmul(attn_weights, value).transpose(1, 2), attn_weights


# oneDNN's linear kernel (a private ATen op, hence the availability check and the fallback) adds the bias, and in
# inference also the exact GELU, inside the GEMM, where MKL's addmm first copies the bias into the output and GELU is
# a separate pass over the 8x-wide MLP activations. Whether it is also the faster GEMM depends on the CPU (about 2x
# MKL's mm for the input gradient on AMD EPYC, close to it on Intel Xeons): `cpu_fast_paths` decides per machine,
# separately for inference and training. Results match `F.linear` to float rounding (tests compare both). Compilers
# and exporters trace the public ops instead: inductor fuses on its own, and exported graphs must not contain
# private ops.
_HAS_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _records_grad(inputs: torch.Tensor, module: nn.Module) -> bool:
    return torch.is_grad_enabled() and (inputs.requires_grad or any(p.requires_grad for p in module.parameters()))


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or "forward" in vars(module))


def _uses_onednn_linear(hidden_states: torch.Tensor, linear: nn.Linear, records_grad: bool) -> bool:
    return (
        _HAS_ONEDNN_LINEAR
        # Adapters (PEFT's LoRA layers), quantized layers and hooks (accelerate's offloading) change what the layer
        # computes: only an untouched nn.Linear may be replaced by a direct kernel call.
        and type(linear) is nn.Linear
        and not _has_hooks(linear)
        and hidden_states.device.type == "cpu"
        and hidden_states.dtype == linear.weight.dtype
        # oneDNN has no bf16 inner product without AVX512_BF16/AMX (on AVX2 it refuses to create one).
        and (
            hidden_states.dtype == torch.float32
            or (hidden_states.dtype == torch.bfloat16 and detect_cpu_capabilities().native_bf16)
        )
        # Under autocast F.linear is what gets cast to bfloat16; the private op would silently stay in float32.
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
        and not torch.compiler.is_exporting()
        and not torch.jit.is_tracing()
        # Last: the training choice may time both backends once, which only an eager CPU call should trigger.
        and (cpu_fast_paths().training_linear if records_grad else cpu_inference_linear_backend()) == ONEDNN
    )


class _OneDnnLinearFunction(torch.autograd.Function):
    """`F.linear` computed by oneDNN, with the input-gradient GEMM in oneDNN too (it dominates the backward pass)."""

    @staticmethod
    def forward(ctx, hidden_states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(hidden_states, weight)
        ctx.has_bias = bias is not None
        return torch.ops.mkldnn._linear_pointwise(hidden_states, weight, bias, "none", [], "")

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        hidden_states, weight = ctx.saved_tensors
        grad_rows = grad_output.reshape(-1, grad_output.shape[-1])
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = torch.ops.mkldnn._linear_pointwise(grad_output, weight.t().contiguous(), None, "none", [], "")
        if ctx.needs_input_grad[1]:
            grad_weight = grad_rows.t().mm(hidden_states.reshape(-1, hidden_states.shape[-1]))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_rows.sum(0)
        return grad_input, grad_weight, grad_bias


def fast_linear(hidden_states: torch.Tensor, linear: nn.Linear, fused_gelu: bool = False) -> torch.Tensor:
    """`linear(hidden_states)`, then exact (erf) GELU when `fused_gelu`, on the fastest exact kernel available."""
    records_grad = _records_grad(hidden_states, linear)
    if not _uses_onednn_linear(hidden_states, linear, records_grad):
        output = linear(hidden_states)
    elif records_grad:
        output = _OneDnnLinearFunction.apply(hidden_states, linear.weight, linear.bias)
    else:
        # GELU's backward needs its input, so the activation is fused into the GEMM only when no gradient is recorded.
        activation, algorithm = ("gelu", "none") if fused_gelu else ("none", "")
        return torch.ops.mkldnn._linear_pointwise(hidden_states, linear.weight, linear.bias, activation, [], algorithm)
    return F.gelu(output) if fused_gelu else output


class PvtSpatialReductionAttention(nn.Module):
    """Multi-head attention whose keys/values come from the feature map shrunk by `sr_ratio` (conv k=s=R + LN)."""

    def __init__(self, config, stage_index: int):
        super().__init__()
        hidden_size = config.hidden_sizes[stage_index]
        self.config = config
        self.num_heads = config.num_attention_heads[stage_index]
        self.head_dim = hidden_size // self.num_heads
        self.scaling = self.head_dim**-0.5
        # Read by transformers' SDPA integration: without it a causal mask is applied.
        self.is_causal = False
        self.sr_ratio = config.sr_ratios[stage_index]

        self.q = nn.Linear(hidden_size, hidden_size, bias=config.qkv_bias)
        self.kv = nn.Linear(hidden_size, 2 * hidden_size, bias=config.qkv_bias)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.proj_drop = nn.Dropout(config.hidden_dropout_prob)
        if self.sr_ratio > 1:
            self.sr = nn.Conv2d(hidden_size, hidden_size, kernel_size=self.sr_ratio, stride=self.sr_ratio)
            self.norm = nn.LayerNorm(hidden_size, eps=config.conv_layer_norm_eps)

    def forward(
        self, hidden_states: torch.Tensor, height: int, width: int, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, seq_len, hidden_size = hidden_states.shape
        query = fast_linear(hidden_states, self.q).view(batch_size, seq_len, self.num_heads, self.head_dim)
        query = query.transpose(1, 2)
        if self.sr_ratio > 1:
            feature_map = hidden_states.transpose(1, 2).reshape(batch_size, hidden_size, height, width)
            hidden_states = self.norm(self.sr(feature_map).flatten(2).transpose(1, 2))
        key_value = fast_linear(hidden_states, self.kv).view(batch_size, -1, 2, self.num_heads, self.head_dim)
        key, value = key_value.permute(2, 0, 3, 1, 4)

        # Fused kernels (sdpa, flash) never materialise the weights: a call that asks for them runs eager, the
        # same attention within float rounding.
        attention_interface: Callable = eager_attention_forward
        if not output_attentions:
            attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(
                self.config._attn_implementation, eager_attention_forward
            )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            None,
            scaling=self.scaling,
            dropout=self.config.attention_probs_dropout_prob if self.training else 0.0,
        )
        attn_output = attn_output.reshape(batch_size, seq_len, hidden_size)
        return self.proj_drop(fast_linear(attn_output, self.proj)), attn_weights


# glibc's malloc hands out every block above 32 MiB (its largest mmap threshold) as fresh mmap'd pages, so each such
# tensor costs a page fault per 4 KiB and a zeroing pass: 18 ms of a 28 ms stage-1 `fc1` (PVT-Small, batch 8, 224²,
# 51 MB of activations), more than the GEMM itself. In inference the MLP's 4-8x wide activation is the only tensor
# that large, and it is row-wise, so above that size it runs in row chunks; other allocators lose nothing measurable.
# Training keeps the whole MLP: checkpointed chunks (recomputed in the backward pass) saved a third of the activation
# memory at the same speed on an idle machine, but ran at 0.88x native on a busy one (native: 1.0x there).
MLP_CHUNKING_BYTES = 32 * 2**20
MLP_CHUNK_BYTES = 8 * 2**20


class PvtMlp(nn.Module):
    def __init__(self, config, stage_index: int):
        super().__init__()
        hidden_size = config.hidden_sizes[stage_index]
        self.fc1 = nn.Linear(hidden_size, int(hidden_size * config.mlp_ratios[stage_index]))
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(self.fc1.out_features, hidden_size)
        self.drop = nn.Dropout(config.hidden_dropout_prob)
        self.exact_gelu = config.hidden_act == "gelu"

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        rows = None if _records_grad(hidden_states, self) else self.rows_per_chunk(hidden_states)
        if rows is None:
            return self.unchunked_forward(hidden_states)
        flat_rows = hidden_states.reshape(-1, hidden_states.shape[-1])
        output = None
        for start in range(0, flat_rows.shape[0], rows):
            chunk = self.unchunked_forward(flat_rows[start : start + rows])
            # Allocated from the first chunk: the output's dtype need not be the input's (int8 layers read uint8).
            output = chunk.new_empty(flat_rows.shape[0], chunk.shape[-1]) if output is None else output
            output[start : start + rows] = chunk
        return output.view(*hidden_states.shape[:-1], -1)

    def chunk_sizes(self) -> tuple[int, int]:
        """(hidden activation bytes above which the MLP runs in row chunks, bytes per chunk)."""
        return MLP_CHUNKING_BYTES, MLP_CHUNK_BYTES

    def rows_per_chunk(self, hidden_states: torch.Tensor) -> int | None:
        """Rows per chunk when the hidden activation would exceed `chunk_sizes()[0]` on CPU, else None."""
        row_bytes = self.fc1.out_features * hidden_states.element_size()
        chunking_bytes, chunk_bytes = self.chunk_sizes()
        if (
            hidden_states.device.type != "cpu"
            or hidden_states.numel() // hidden_states.shape[-1] * row_bytes <= chunking_bytes
            # Compilers plan memory themselves, and exported graphs should stay the plain MLP.
            or torch.compiler.is_compiling()
            or torch.compiler.is_exporting()
            or torch.jit.is_tracing()
            # A hook on a layer (feature extraction, offloading) expects one call per forward pass.
            or any(_has_hooks(layer) for layer in (self.fc1, self.act, self.fc2))
        ):
            return None
        return max(1, chunk_bytes // row_bytes)

    def unchunked_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.exact_gelu:
            hidden_states = fast_linear(hidden_states, self.fc1, fused_gelu=True)
        else:
            hidden_states = self.act(fast_linear(hidden_states, self.fc1))
        return self.drop(fast_linear(self.drop(hidden_states), self.fc2))


class PvtDropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample while training."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep_prob = 1.0 - self.drop_prob
        mask_shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
        keep = hidden_states.new_empty(mask_shape).bernoulli_(keep_prob)
        return hidden_states * keep / keep_prob

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class PvtBlock(GradientCheckpointingLayer):
    def __init__(self, config, stage_index: int, block_index: int):
        super().__init__()
        hidden_size = config.hidden_sizes[stage_index]
        num_blocks = sum(config.depths)
        # Stochastic depth grows linearly from 0 (first block) to drop_path_rate (last block).
        drop_prob = config.drop_path_rate * block_index / max(num_blocks - 1, 1)
        self.norm1 = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.attn = PvtSpatialReductionAttention(config, stage_index)
        self.norm2 = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.mlp = PvtMlp(config, stage_index)
        self.drop_path = PvtDropPath(drop_prob)

    def forward(
        self, hidden_states: torch.Tensor, height: int, width: int, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_output, attn_weights = self.attn(self.norm1(hidden_states), height, width, output_attentions)
        hidden_states = hidden_states + self.drop_path(attn_output)
        hidden_states = hidden_states + self.drop_path(self.mlp(self.norm2(hidden_states)))
        return hidden_states, attn_weights


class PvtStage(nn.Module):
    def __init__(self, config, stage_index: int, use_cls_token: bool):
        super().__init__()
        first_block = sum(config.depths[:stage_index])
        self.embeddings = PvtPatchEmbeddings(config, stage_index, use_cls_token)
        self.blocks = nn.ModuleList(
            PvtBlock(config, stage_index, first_block + offset) for offset in range(config.depths[stage_index])
        )

    def forward(self, feature_map: torch.Tensor, output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        """Returns the stage's tokens (CLS first when it has one), its NCHW map and per-block attentions."""
        hidden_states, height, width = self.embeddings(feature_map)
        attentions = ()
        for block in self.blocks:
            hidden_states, attn_weights = block(hidden_states, height, width, output_attentions)
            attentions += (attn_weights,)
        spatial_tokens = hidden_states[:, self.embeddings.num_prefix_tokens :]
        # A view, not a copy: (B, H*W, C) read as a channels-last (B, C, H, W) map.
        feature_map = spatial_tokens.transpose(1, 2).reshape(hidden_states.shape[0], -1, height, width)
        return hidden_states, feature_map, attentions


class PvtEncoder(nn.Module):
    def __init__(self, config, use_cls_token: bool):
        super().__init__()
        self.stages = nn.ModuleList(PvtStage(config, index, use_cls_token) for index in range(config.num_stages))

    def forward(self, pixel_values: torch.Tensor, output_attentions: bool = False) -> tuple[torch.Tensor, tuple, tuple]:
        feature_map, feature_maps, attentions = pixel_values, (), ()
        for stage in self.stages:
            hidden_states, feature_map, stage_attentions = stage(feature_map, output_attentions)
            feature_maps += (feature_map,)
            attentions += stage_attentions
        return hidden_states, feature_maps, attentions


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint translation: the one place that knows foreign parameter names.
# Keys are translated to this package's base-model names (`encoder.…`, `norm.…`) plus `classifier.…` for the head.
# `{s}` is the 0-based stage index made from the 1-based stage number in group 1; `{2}` etc. are later groups.
ORIGINAL_KEY_MAP = (
    (r"^patch_embed(\d+)\.(proj|norm)\.", "encoder.stages.{s}.embeddings.{2}."),
    (r"^pos_embed(\d+)$", "encoder.stages.{s}.embeddings.position_embeddings"),
    (r"^block(\d+)\.(\d+)\.", "encoder.stages.{s}.blocks.{2}."),
    (r"^norm\.", "norm."),
    (r"^head\.", "classifier."),
)
# The original Semantic FPN checkpoints (mmseg's EncoderDecoder: `backbone.` = the dense original PVT, whose
# `pos_embed4` keeps the CLS slot; ConvModules hold `conv`/`bn`; the decode head's classifier is `conv_seg`) -> the
# names of `PvtForSemanticSegmentation.state_dict()`. Sequential indices (upsampling layers count) are the same.
MMSEG_KEY_MAP = (
    (r"^backbone\.patch_embed(\d+)\.(proj|norm)\.", "encoder.stages.{s}.embeddings.{2}."),
    (r"^backbone\.pos_embed(\d+)$", "encoder.stages.{s}.embeddings.position_embeddings"),
    (r"^backbone\.block(\d+)\.(\d+)\.", "encoder.stages.{s}.blocks.{2}."),
    (r"^neck\.(lateral_convs|fpn_convs)\.(\d+)\.conv\.", "neck.{1}.{2}."),
    (r"^decode_head\.scale_heads\.(\d+)\.(\d+)\.conv\.", "decode_head.scale_heads.{1}.{2}.conv."),
    (r"^decode_head\.scale_heads\.(\d+)\.(\d+)\.bn\.", "decode_head.scale_heads.{1}.{2}.batch_norm."),
    (r"^decode_head\.conv_seg\.", "decode_head.classifier."),
)
# transformers' native PVT (`transformers.PvtForImageClassification`, e.g. the `Zetatech/pvt-*-224` checkpoints).
# Stage indices are already 0-based there; its separate key/value projections are fused into `kv` afterwards.
_NATIVE_EMBEDDINGS, _OUR_EMBEDDINGS = r"^(?:pvt\.)?encoder\.patch_embeddings\.(\d+)\.", "encoder.stages.{1}.embeddings."
_NATIVE_BLOCK, _OUR_BLOCK = r"^(?:pvt\.)?encoder\.block\.(\d+)\.(\d+)\.", "encoder.stages.{1}.blocks.{2}."
NATIVE_KEY_MAP = (
    (_NATIVE_EMBEDDINGS + r"projection\.", _OUR_EMBEDDINGS + "proj."),
    (_NATIVE_EMBEDDINGS + r"layer_norm\.", _OUR_EMBEDDINGS + "norm."),
    (_NATIVE_EMBEDDINGS + r"(position_embeddings|cls_token)$", _OUR_EMBEDDINGS + "{2}"),
    (_NATIVE_BLOCK + r"layer_norm_1\.", _OUR_BLOCK + "norm1."),
    (_NATIVE_BLOCK + r"layer_norm_2\.", _OUR_BLOCK + "norm2."),
    (_NATIVE_BLOCK + r"attention\.self\.query\.", _OUR_BLOCK + "attn.q."),
    (_NATIVE_BLOCK + r"attention\.self\.(key|value)\.", _OUR_BLOCK + "attn.{3}."),
    (_NATIVE_BLOCK + r"attention\.self\.sequence_reduction\.", _OUR_BLOCK + "attn.sr."),
    (_NATIVE_BLOCK + r"attention\.self\.layer_norm\.", _OUR_BLOCK + "attn.norm."),
    (_NATIVE_BLOCK + r"attention\.output\.dense\.", _OUR_BLOCK + "attn.proj."),
    (_NATIVE_BLOCK + r"mlp\.dense(1|2)\.", _OUR_BLOCK + "mlp.fc{3}."),
    (r"^(?:pvt\.)?encoder\.layer_norm\.", "norm."),
    (r"^classifier\.", "classifier."),
)
_NATIVE_CONFIG_FIELDS = {
    "num_channels": "num_channels",
    "image_size": "image_size",
    "hidden_sizes": "hidden_sizes",
    "depths": "depths",
    "num_attention_heads": "num_attention_heads",
    "mlp_ratios": "mlp_ratios",
    "sequence_reduction_ratios": "sr_ratios",
    "patch_sizes": "patch_sizes",
    "qkv_bias": "qkv_bias",
    "hidden_act": "hidden_act",
    "hidden_dropout_prob": "hidden_dropout_prob",
    "attention_probs_dropout_prob": "attention_probs_dropout_prob",
    "drop_path_rate": "drop_path_rate",
    "initializer_range": "initializer_range",
    "num_labels": "num_labels",
    "id2label": "id2label",
    "label2id": "label2id",
    "problem_type": "problem_type",
}


def _rename_keys(state_dict: dict, key_map, source: str) -> dict:
    renamed, unknown = {}, []
    for key, tensor in state_dict.items():
        for pattern, template in key_map:
            match = re.match(pattern, key)
            if match:
                stage = int(match.group(1)) - 1 if match.groups() and template.count("{s}") else None
                new_prefix = template.format(None, *match.groups(), s=stage)
                renamed[new_prefix + key[match.end() :]] = tensor
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"Unrecognised {source} checkpoint keys (is this a PVT v1 checkpoint?): {unknown[:10]}")
    return renamed


def convert_original_state_dict(state_dict: dict, num_stages: int = 4) -> dict:
    """Original PVT release (`pvt_tiny.pth` …) -> this package's names."""
    converted = _rename_keys({k: v for k, v in state_dict.items() if k != "cls_token"}, ORIGINAL_KEY_MAP, "original")
    if "cls_token" in state_dict:
        converted[f"encoder.stages.{num_stages - 1}.embeddings.cls_token"] = state_dict["cls_token"]
    return converted


def convert_mmseg_state_dict(state_dict: dict) -> dict:
    """An original Semantic FPN checkpoint (mmseg layout, `fpn_pvt_s_ade20k_40k.pth` …) -> this package's names."""
    return _rename_keys(state_dict, MMSEG_KEY_MAP, "mmseg Semantic FPN")


def convert_native_state_dict(state_dict: dict) -> dict:
    """transformers' native PVT -> this package's names (key and value projections fused into `kv`)."""
    converted = _rename_keys(state_dict, NATIVE_KEY_MAP, "transformers-native PVT")
    for key in [k for k in converted if ".attn.key." in k]:
        fused = key.replace(".attn.key.", ".attn.kv.")
        value_key = key.replace(".attn.key.", ".attn.value.")
        converted[fused] = torch.cat((converted.pop(key), converted.pop(value_key)), dim=0)
    return converted


def convert_native_config(native: dict) -> dict:
    """transformers' native PvtConfig dict -> PvtConfig kwargs. The native model uses one eps for every norm."""
    if list(native.get("strides", native.get("patch_sizes", []))) != list(native.get("patch_sizes", [])):
        raise ValueError(
            "Native PVT configs whose strides differ from patch_sizes are not PVT v1 and are not supported."
        )
    kwargs = {ours: native[theirs] for theirs, ours in _NATIVE_CONFIG_FIELDS.items() if native.get(theirs) is not None}
    if "id2label" in kwargs:
        kwargs.pop("num_labels", None)
    eps = native.get("layer_norm_eps", 1e-6)
    return {**kwargs, "layer_norm_eps": eps, "conv_layer_norm_eps": eps}


_AUTO_MAP = {
    "AutoConfig": "configuration_pvt.PvtConfig",
    "AutoModel": "modeling_pvt.PvtModel",
    "AutoModelForImageClassification": "modeling_pvt.PvtForImageClassification",
    "AutoBackbone": "modeling_pvt.PvtBackbone",
    "AutoModelForSemanticSegmentation": "modeling_pvt.PvtForSemanticSegmentation",
}
_CONFIG_KWARGS = (set(inspect.signature(PvtConfig.__init__).parameters) - {"self", "kwargs"}) | {
    "num_labels",
    "id2label",
    "label2id",
    "problem_type",
}
_HUB_KWARGS = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision", "subfolder")


def read_checkpoint_json(path_or_repo, filename: str, hub_kwargs: dict) -> dict | None:
    """A JSON file of a local folder or (cached) Hub repo, or None when the checkpoint has no such file."""
    resolved = cached_file(path_or_repo, filename, _raise_exceptions_for_missing_entries=False, **hub_kwargs)
    if resolved is None:
        return None
    with open(resolved, encoding="utf-8") as handle:
        return json.load(handle)


def load_checkpoint_weights(path_or_repo, hub_kwargs: dict) -> dict:
    """All tensors of a checkpoint folder/repo: safetensors (single or sharded), else a weights-only torch load."""
    from safetensors.torch import load_file

    def fetch(name):
        return cached_file(path_or_repo, name, _raise_exceptions_for_missing_entries=False, **hub_kwargs)

    if single := fetch("model.safetensors"):
        return load_file(single)
    if index := read_checkpoint_json(path_or_repo, "model.safetensors.index.json", hub_kwargs):
        state_dict = {}
        for shard in sorted(set(index["weight_map"].values())):
            state_dict.update(load_file(fetch(shard)))
        return state_dict
    if legacy := fetch("pytorch_model.bin"):
        return torch.load(legacy, map_location="cpu", weights_only=True)
    raise OSError(f"No model.safetensors or pytorch_model.bin found in {path_or_repo}.")


@dataclass
class _Requests:
    """What the caller asked a forward pass to return, with the config's defaults filled in."""

    output_attentions: bool
    output_hidden_states: bool
    return_dict: bool


class PvtPreTrainedModel(PreTrainedModel):
    config_class = PvtConfig
    base_model_prefix = "pvt"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _no_split_modules = ["PvtBlock"]
    # Trainer would otherwise pass `num_items_in_batch` and rescale the loss under DDP.
    accepts_loss_kwargs = False

    def save_pretrained(self, save_directory, *args, **kwargs):
        # Every model class here loads every checkpoint, so the folder advertises all of them to the Auto classes.
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **_AUTO_MAP}
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        """PVT's truncated normal for Linear layers and embeddings; transformers' defaults for everything else
        (convolutions: N(0, initializer_range), as its UperNet head does; norms, BatchNorm statistics)."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, PvtPatchEmbeddings):
            init.trunc_normal_(module.position_embeddings, std=std)
            if module.cls_token is not None:
                init.trunc_normal_(module.cls_token, std=std)
        else:
            super()._init_weights(module)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """Loads our checkpoints as usual, and also folders/repos saved by `transformers`' native PVT
        (`model_type: "pvt"`): config fields and weight names are translated on the fly."""
        if pretrained_model_name_or_path is None or kwargs.get("config") is not None:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        hub_kwargs = {name: kwargs[name] for name in _HUB_KWARGS if name in kwargs}
        native_config = read_checkpoint_json(pretrained_model_name_or_path, "config.json", hub_kwargs)
        if native_config is None or native_config.get("model_type") != "pvt":
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

        for name in _HUB_KWARGS:
            kwargs.pop(name, None)
        config_overrides = {name: kwargs.pop(name) for name in list(kwargs) if name in _CONFIG_KWARGS}
        config = PvtConfig(**{**convert_native_config(native_config), **config_overrides})
        state_dict = convert_native_state_dict(load_checkpoint_weights(pretrained_model_name_or_path, hub_kwargs))
        return super().from_pretrained(
            None, *model_args, config=config, state_dict=cls._to_own_layout(state_dict), **kwargs
        )

    @classmethod
    def _to_own_layout(cls, state_dict: dict) -> dict:
        """Base-model names + `classifier.` -> the names this class's `state_dict()` uses."""
        return {key: tensor for key, tensor in state_dict.items() if not key.startswith("classifier.")}

    def _checked(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(
                f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}; "
                "use the image processor with return_tensors='pt'."
            )
        if pixel_values.ndim != 4:
            raise ValueError(
                f"pixel_values must be a 4-D (batch, channels, height, width) tensor, got shape "
                f"{tuple(pixel_values.shape)}. For a single image use pixel_values.unsqueeze(0)."
            )
        if not pixel_values.is_floating_point():
            raise ValueError(
                f"pixel_values must be a floating-point tensor, got {pixel_values.dtype}. Convert and normalise "
                "images with the image processor (or `.float() / 255` and the model's mean/std)."
            )
        channels, height, width = pixel_values.shape[1:]
        if channels != self.config.num_channels:
            raise ValueError(
                f"pixel_values has {channels} channels but the model expects {self.config.num_channels}. Convert "
                "the images (e.g. `image.convert('RGB')`) or set num_channels in the config."
            )
        min_size = self.config.min_input_size
        if height < min_size or width < min_size:
            raise ValueError(
                f"Input images are {height}x{width} pixels but this model needs at least {min_size}x{min_size} "
                f"(its total stride times the spatial-reduction ratio). Resize the images to at least {min_size}."
            )
        return pixel_values

    def _requests(self, output_attentions, output_hidden_states, return_dict) -> _Requests:
        requests = _Requests(
            output_attentions=self.config.output_attentions if output_attentions is None else output_attentions,
            output_hidden_states=(
                self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
            ),
            return_dict=self.config.return_dict if return_dict is None else return_dict,
        )
        return requests


class PvtModel(PvtPreTrainedModel):
    def __init__(self, config: PvtConfig):
        super().__init__(config)
        self.encoder = PvtEncoder(config, use_cls_token=config.uses_cls_token(dense=False))
        self.norm = nn.LayerNorm(config.hidden_sizes[-1], eps=config.layer_norm_eps)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        r"""
        Returns `last_hidden_state` (B, 1 + H/32*W/32, C4): the final-normed tokens of the last stage, CLS first;
        `pooler_output` (B, C4): the normed CLS token (the mean of the tokens when `last_stage_cls_token=False`);
        `hidden_states`: the four stages' NCHW maps (strides 4/8/16/32) when `output_hidden_states`; `attentions`:
        one (B, heads, N, N_reduced) tensor per block when `output_attentions` (computed with eager attention for
        that call when the model uses sdpa).
        """
        requests = self._requests(output_attentions, output_hidden_states, return_dict)
        hidden_states, feature_maps, attentions = self.encoder(self._checked(pixel_values), requests.output_attentions)
        last_hidden_state = self.norm(hidden_states)
        has_cls_token = self.encoder.stages[-1].embeddings.num_prefix_tokens
        output = BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state,
            pooler_output=last_hidden_state[:, 0] if has_cls_token else last_hidden_state.mean(dim=1),
            hidden_states=feature_maps if requests.output_hidden_states else None,
            attentions=attentions if requests.output_attentions else None,
        )
        return output if requests.return_dict else output.to_tuple()


class PvtForImageClassification(PvtPreTrainedModel):
    def __init__(self, config: PvtConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.pvt = PvtModel(config)
        self.classifier = (
            nn.Linear(config.hidden_sizes[-1], config.num_labels) if config.num_labels > 0 else nn.Identity()
        )
        self.post_init()

    @classmethod
    def _to_own_layout(cls, state_dict: dict) -> dict:
        return {(k if k.startswith("classifier.") else f"pvt.{k}"): v for k, v in state_dict.items()}

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> ImageClassifierOutput | tuple:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)` or float `(batch_size, num_labels)`, *optional*):
            Cross-entropy for single-label classification, BCE-with-logits for multi-label, MSE when
            `num_labels == 1` (regression) — chosen by `config.problem_type` as in other HF classifiers.
        """
        requests = self._requests(output_attentions, output_hidden_states, return_dict)
        outputs = self.pvt(
            pixel_values,
            output_attentions=requests.output_attentions,
            output_hidden_states=requests.output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(outputs.pooler_output)
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        output = ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if requests.return_dict else output.to_tuple()


# Parts of other checkpoints that a dense model has no use for: the classifier's final norm and head, the CLS token
# (dense models attend over spatial tokens only), and a segmentation model's neck and head.
_NOT_IN_DENSE_BACKBONE = [r"^norm\.", r"^classifier\.", r"\.cls_token$", r"^neck\.", r"^decode_head\."]


class PvtBackbone(BackboneMixin, PvtPreTrainedModel):
    """Multi-scale NCHW feature maps (strides 4/8/16/32) for detection and segmentation heads.

    By default the last stage has no CLS token, as in the original segmentation/detection backbones; set
    `last_stage_cls_token=True` in the config for the classifier's stage 4 (this class's behaviour before 0.2)."""

    _keys_to_ignore_on_load_unexpected = _NOT_IN_DENSE_BACKBONE

    def __init__(self, config: PvtConfig):
        super().__init__(config)
        self.num_features = list(config.hidden_sizes)
        self.encoder = PvtEncoder(config, use_cls_token=config.uses_cls_token(dense=True))
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> BackboneOutput | tuple:
        requests = self._requests(output_attentions, output_hidden_states, return_dict)
        _, feature_maps, attentions = self.encoder(self._checked(pixel_values), requests.output_attentions)
        output = BackboneOutput(
            feature_maps=tuple(feature_maps[index] for index in self.out_indices),
            hidden_states=feature_maps if requests.output_hidden_states else None,
            attentions=attentions if requests.output_attentions else None,
        )
        return output if requests.return_dict else output.to_tuple()


# ---------------------------------------------------------------------------------------------------------------
# Semantic FPN (Kirillov et al., 2019) as the paper's mmseg config builds it: FPN neck + FPNHead.


class PvtFpnNeck(nn.Module):
    """1x1 lateral convs to a common width, a nearest-neighbour top-down pathway, then a 3x3 conv per level.
    No norm, no activation (mmseg's `FPN` with its defaults)."""

    def __init__(self, config):
        super().__init__()
        width = config.fpn_hidden_size
        self.lateral_convs = nn.ModuleList(nn.Conv2d(channels, width, kernel_size=1) for channels in config.hidden_sizes)
        self.fpn_convs = nn.ModuleList(
            nn.Conv2d(width, width, kernel_size=3, padding=1) for _ in config.hidden_sizes
        )

    def forward(self, feature_maps: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        laterals = [conv(feature_map) for conv, feature_map in zip(self.lateral_convs, feature_maps)]
        for level in range(len(laterals) - 1, 0, -1):
            finer = laterals[level - 1]
            laterals[level - 1] = finer + F.interpolate(laterals[level], size=finer.shape[-2:], mode="nearest")
        return [conv(lateral) for conv, lateral in zip(self.fpn_convs, laterals)]


class PvtConvBatchNormRelu(nn.Sequential):
    """mmcv's ConvModule with BatchNorm and ReLU: a 3x3 conv without bias (the norm has one)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.batch_norm = nn.BatchNorm2d(out_channels)
        self.activation = nn.ReLU()


class PvtSemanticFpnHead(nn.Module):
    """mmseg's `FPNHead`: per level, max(1, log2(stride / 4)) x [conv-BN-ReLU, x2 bilinear upsample] (no upsample
    at the finest level), the levels resized to the finest one and summed, then Dropout2d and a 1x1 classifier.

    The branches are `nn.Sequential`s with the upsampling layers in them, so that parameter indices are mmseg's."""

    def __init__(self, config):
        super().__init__()
        width = config.decoder_hidden_size
        strides = [config.stage_stride(index) for index in range(config.num_stages)]
        self.scale_heads = nn.ModuleList()
        for stride in strides:
            layers = []
            for repeat in range(max(1, int(math.log2(stride) - math.log2(strides[0])))):
                layers.append(PvtConvBatchNormRelu(config.fpn_hidden_size if repeat == 0 else width, width))
                if stride != strides[0]:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*layers))
        self.dropout = nn.Dropout2d(config.classifier_dropout_prob)
        self.classifier = nn.Conv2d(width, config.num_labels, kernel_size=1)

    def forward(self, fpn_maps: list[torch.Tensor]) -> torch.Tensor:
        output = self.scale_heads[0](fpn_maps[0])
        for scale_head, fpn_map in zip(self.scale_heads[1:], fpn_maps[1:]):
            # Inputs whose size is not a multiple of 32 give coarse maps that, doubled, miss the finest map by a pixel.
            output = output + F.interpolate(
                scale_head(fpn_map), size=output.shape[-2:], mode="bilinear", align_corners=False
            )
        return self.classifier(self.dropout(output))


class PvtForSemanticSegmentation(PvtPreTrainedModel):
    """PVT + Semantic FPN, the paper's segmentation model: `logits` at 1/4 of the input size."""

    _keys_to_ignore_on_load_unexpected = [r"^norm\.", r"^classifier\.", r"\.cls_token$"]

    def __init__(self, config: PvtConfig):
        super().__init__(config)
        self.encoder = PvtEncoder(config, use_cls_token=config.uses_cls_token(dense=True))
        self.neck = PvtFpnNeck(config)
        self.decode_head = PvtSemanticFpnHead(config)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> SemanticSegmenterOutput | tuple:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*):
            Class index per pixel; `config.semantic_loss_ignore_index` (255) marks pixels without a label. The loss is
            the cross-entropy of the logits upsampled bilinearly to the labels' size.

        Returns `logits` (B, num_labels, H/4, W/4) (rounded down), the four backbone maps as `hidden_states` and the
        attentions as for `PvtModel`. `image_processor.post_process_semantic_segmentation` turns logits into maps.
        """
        requests = self._requests(output_attentions, output_hidden_states, return_dict)
        _, feature_maps, attentions = self.encoder(self._checked(pixel_values), requests.output_attentions)
        logits = self.decode_head(self.neck(feature_maps))
        loss = None
        if labels is not None:
            if self.config.num_labels < 2:
                raise ValueError(
                    f"Semantic segmentation needs num_labels >= 2 (got {self.config.num_labels}): give the config "
                    "the number of classes, background included."
                )
            upsampled = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
            ignore_index = self.config.semantic_loss_ignore_index
            pixel_losses = F.cross_entropy(upsampled.float(), labels.long(), ignore_index=ignore_index, reduction="sum")
            # The mean over labelled pixels; a batch (crop) without any is a zero loss rather than 0/0 = NaN.
            loss = pixel_losses / (labels != ignore_index).sum().clamp(min=1)
        output = SemanticSegmenterOutput(
            loss=loss,
            logits=logits,
            hidden_states=feature_maps if requests.output_hidden_states else None,
            attentions=attentions if requests.output_attentions else None,
        )
        return output if requests.return_dict else output.to_tuple()


__all__ = [
    "PvtPreTrainedModel",
    "PvtModel",
    "PvtForImageClassification",
    "PvtBackbone",
    "PvtForSemanticSegmentation",
    "convert_original_state_dict",
    "convert_mmseg_state_dict",
    "convert_native_state_dict",
    "convert_native_config",
    "read_checkpoint_json",
    "load_checkpoint_weights",
]
