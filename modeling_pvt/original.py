"""PVT v1 in the layout of the original release (github.com/whai362/PVT, `classification/pvt.py`), with its
parameter names (`patch_embed1.proj`, `pos_embed1`, `block1.0.attn.kv`, `cls_token`, `norm`, `head`).

It exists so that `scripts/convert_checkpoint.py --verify` can run an original checkpoint exactly as its authors
did (loaded with `strict=True`) and compare it with the converted model. It is inference-only: dropout and
stochastic depth, which are identities at evaluation time, are left out. Not part of the Hub remote code.
"""

import torch
import torch.nn.functional as F
from torch import nn


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, sr_ratio: int, norm_eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=norm_eps)

    def forward(self, x, H, W):
        B, N, C = x.shape
        q = self.q(x).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        if self.sr_ratio > 1:
            x = self.norm(self.sr(x.permute(0, 2, 1).reshape(B, C, H, W)).reshape(B, C, -1).permute(0, 2, 1))
        kv = self.kv(x).reshape(B, -1, 2, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio, qkv_bias, sr_ratio, norm_eps, sr_norm_eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, sr_ratio, sr_norm_eps)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, H, W):
        x = x + self.attn(self.norm1(x), H, W)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, grid: tuple[int, int], patch_size: int, in_chans: int, embed_dim: int, norm_eps: float):
        super().__init__()
        self.H, self.W = grid
        self.num_patches = self.H * self.W
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

    def forward(self, x):
        x = self.proj(x)
        H, W = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), (H, W)


class OriginalPyramidVisionTransformer(nn.Module):
    """The original `PyramidVisionTransformer`, sized from a `PvtConfig` (its per-stage lists, eps values and
    `image_size`) with a `num_classes`-way head."""

    def __init__(self, config, num_classes: int):
        super().__init__()
        self.num_stages = config.num_stages
        for i in range(self.num_stages):
            in_chans = config.num_channels if i == 0 else config.hidden_sizes[i - 1]
            dim = config.hidden_sizes[i]
            patch_embed = PatchEmbed(
                config.position_grid(i), config.patch_sizes[i], in_chans, dim, config.conv_layer_norm_eps
            )
            num_tokens = patch_embed.num_patches + (1 if i == self.num_stages - 1 else 0)
            setattr(self, f"patch_embed{i + 1}", patch_embed)
            setattr(self, f"pos_embed{i + 1}", nn.Parameter(torch.zeros(1, num_tokens, dim)))
            blocks = nn.ModuleList(
                Block(
                    dim,
                    config.num_attention_heads[i],
                    config.mlp_ratios[i],
                    config.qkv_bias,
                    config.sr_ratios[i],
                    config.layer_norm_eps,
                    config.conv_layer_norm_eps,
                )
                for _ in range(config.depths[i])
            )
            setattr(self, f"block{i + 1}", blocks)
        self.norm = nn.LayerNorm(config.hidden_sizes[-1], eps=config.layer_norm_eps)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_sizes[-1]))
        self.head = nn.Linear(config.hidden_sizes[-1], num_classes) if num_classes > 0 else nn.Identity()

    def _get_pos_embed(self, pos_embed, patch_embed, H, W):
        # The release's rule, kept verbatim: it compares every stage with stage 1's stored patch count.
        if H * W == self.patch_embed1.num_patches:
            return pos_embed
        grid = pos_embed.reshape(1, patch_embed.H, patch_embed.W, -1).permute(0, 3, 1, 2)
        return F.interpolate(grid, size=(H, W), mode="bilinear").reshape(1, -1, H * W).permute(0, 2, 1)

    def forward_features(self, x):
        """The normalised CLS token, the input of the head."""
        B = x.shape[0]
        for i in range(self.num_stages):
            patch_embed = getattr(self, f"patch_embed{i + 1}")
            pos_embed = getattr(self, f"pos_embed{i + 1}")
            x, (H, W) = patch_embed(x)
            if i == self.num_stages - 1:
                x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
                pos_embed = torch.cat(
                    (pos_embed[:, :1], self._get_pos_embed(pos_embed[:, 1:], patch_embed, H, W)), dim=1
                )
            else:
                pos_embed = self._get_pos_embed(pos_embed, patch_embed, H, W)
            x = x + pos_embed
            for block in getattr(self, f"block{i + 1}"):
                x = block(x, H, W)
            if i != self.num_stages - 1:
                x = x.reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous()
        return self.norm(x)[:, 0]

    def forward(self, x):
        return self.head(self.forward_features(x))


__all__ = ["OriginalPyramidVisionTransformer"]
