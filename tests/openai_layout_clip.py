"""A tiny CLIP in OpenAI's state-dict layout, built on torch's own `nn.MultiheadAttention`.

It is an independent implementation of the two towers (written from the layout facts of the
spec, section 5: stacked `in_proj_weight`, `x @ proj` projections, QuickGELU, causal text mask,
text read at the highest token id), used to check the OpenAI-layout converter. It can be saved as
a TorchScript archive with `encode_text` / `encode_image`, like OpenAI's released `.pt` files.
"""

from collections import OrderedDict

import torch
from torch import nn


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(c_fc=nn.Linear(width, 4 * width), gelu=QuickGELU(), c_proj=nn.Linear(4 * width, width))
        )
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        normed = self.ln_1(x)
        x = x + self.attn(normed, normed, normed, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, mask)
        return x


class VisionTransformer(nn.Module):
    def __init__(self, image_size: int, patch_size: int, width: int, layers: int, heads: int, output_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) * width**-0.5)
        self.positional_embedding = nn.Parameter(torch.randn((image_size // patch_size) ** 2 + 1, width) * 0.1)
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.randn(width, output_dim) * width**-0.5)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.conv1(pixels).flatten(2).transpose(1, 2)  # [batch, patches, width]
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj


class OpenAILayoutCLIP(nn.Module):
    def __init__(
        self,
        vocab_size=99,
        context_length=16,
        text_width=32,
        text_layers=2,
        text_heads=4,
        image_size=32,
        patch_size=8,
        vision_width=32,
        vision_layers=2,
        vision_heads=4,
        embed_dim=16,
    ):
        super().__init__()
        self.visual = VisionTransformer(image_size, patch_size, vision_width, vision_layers, vision_heads, embed_dim)
        self.token_embedding = nn.Embedding(vocab_size, text_width)
        self.positional_embedding = nn.Parameter(torch.randn(context_length, text_width) * 0.1)
        self.transformer = Transformer(text_width, text_layers, text_heads)
        self.ln_final = nn.LayerNorm(text_width)
        self.text_projection = nn.Parameter(torch.randn(text_width, embed_dim) * text_width**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(2.6592))
        with torch.no_grad():  # non-trivial norms, as in a trained model
            for module in self.modules():
                if isinstance(module, nn.LayerNorm):
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.uniform_(-0.1, 0.1)

    @torch.jit.export
    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        causal = torch.full((length, length), float("-inf"), device=tokens.device).triu(1)
        x = self.ln_final(self.transformer(x, causal))
        end = tokens.argmax(dim=-1)  # the end token is the highest id
        return x[torch.arange(x.shape[0]), end] @ self.text_projection

    @torch.jit.export
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.encode_text(tokens)
