"""What E2 adds to CLIP, in parameters."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .modeling import E2CLIPConfig, E2CLIPModel


@dataclass
class ParameterReport:
    clip_parameters: int
    e2_new_parameters: int
    new_by_group: dict[str, int]

    @property
    def share_of_clip(self) -> float:
        return self.e2_new_parameters / self.clip_parameters

    def as_dict(self) -> dict:
        return {**asdict(self), "share_of_clip": self.share_of_clip}

    def lines(self) -> list[str]:
        rows = [f"CLIP parameters:      {self.clip_parameters:>13,}"]
        rows.append(f"E2 new parameters:    {self.e2_new_parameters:>13,}  ({100 * self.share_of_clip:.2f}% of CLIP)")
        rows += [f"  {group:<20}{count:>13,}" for group, count in self.new_by_group.items()]
        return rows


def count_new_parameters(model: E2CLIPModel) -> ParameterReport:
    """Splits the model's parameters into CLIP's (the backbone, the global projection included) and
    E2's additions (selection tokens, fusion blocks, entity norms and projections)."""
    new_names = set(model.e2_parameter_names())
    groups = {"selection_tokens": 0, "fusion_blocks": 0, "region_head": 0}
    clip_total = 0
    for name, parameter in model.named_parameters():
        if name not in new_names:
            clip_total += parameter.numel()
        elif name.endswith("selection_tokens"):
            groups["selection_tokens"] += parameter.numel()
        elif ".fusion_blocks." in name:
            groups["fusion_blocks"] += parameter.numel()
        else:
            groups["region_head"] += parameter.numel()
    return ParameterReport(clip_total, sum(groups.values()), groups)


def count_for_config(config: E2CLIPConfig) -> ParameterReport:
    """Counts without allocating weights (the model is built on the meta device)."""
    with torch.device("meta"):
        model = E2CLIPModel(config)
    return count_new_parameters(model)
