"""`build_vision_projector`: the `mm_projector` named by `config.mm_projector_type`."""

from __future__ import annotations

import re

from torch import nn


class IdentityMap(nn.Module):
    """`mm_projector_type: identity` (features already have the LM width)."""

    def forward(self, x, *args, **kwargs):
        return x


def build_vision_projector(config) -> nn.Module:
    """Linear, or `mlp{N}x_gelu` (N Linear layers with GELU between; LLaVA-1.5: mlp2x_gelu).

    Maps [..., mm_hidden_size] -> [..., hidden_size]; the Sequential indices (0, 2, ...) are the
    checkpoint key names `model.mm_projector.{0,2}.*`.
    """
    kind = getattr(config, "mm_projector_type", "linear")
    if kind == "linear":
        return nn.Linear(config.mm_hidden_size, config.hidden_size)
    if kind == "identity":
        return IdentityMap()
    match = re.fullmatch(r"mlp(\d+)x_gelu", kind)
    if match is None:
        raise ValueError(f"unknown mm_projector_type {kind!r} (expected linear, identity or mlpNx_gelu)")
    layers: list[nn.Module] = [nn.Linear(config.mm_hidden_size, config.hidden_size)]
    for _ in range(int(match.group(1)) - 1):
        layers += [nn.GELU(), nn.Linear(config.hidden_size, config.hidden_size)]
    return nn.Sequential(*layers)
