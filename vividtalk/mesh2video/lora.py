"""LoRA adapters on stage 2's networks: the "dynamic" half of MimicTalk's identity adaptation.

Every ``nn.Conv2d`` and ``nn.Linear`` of a network (but those named in ``exclude``) gets a
low-rank update ``W + (alpha / r) B A`` through ``peft`` (``inject_adapter_in_model``: peft's
LoRA reaches plain torch modules, convolutions included, so nothing is written by hand here).
``B`` starts at zero, so an adapted network computes exactly what the base computes until it
is trained; the base weights are frozen. :func:`merge_lora` folds the updates into the base
weights and removes the wrappers (the network is then as fast as the base).

Tensors: a conv's ``A`` is a conv with the base's kernel, stride and padding to ``r``
channels, ``B`` a 1x1 conv back to the base's channels (peft's layout).
"""

from __future__ import annotations

import torch
from torch import nn

ADAPTER = "person"
"""The peft adapter name (one adapter per network)."""


def lora_targets(network: nn.Module, exclude: tuple[str, ...] = ()) -> list[str]:
    """Names of the ``Conv2d`` / ``Linear`` modules of ``network`` that do not start with any
    prefix in ``exclude`` (sorted as ``named_modules`` lists them)."""
    return [name for name, m in network.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and not name.startswith(exclude)]


def add_lora(network: nn.Module, rank: int, alpha: float | None = None,
             exclude: tuple[str, ...] = ()) -> list[str]:
    """Wrap the targets of ``network`` (in place) with rank-``rank`` LoRA; freeze everything else.

    Args:
        rank: r >= 1; alpha: the scale numerator (None: ``rank``, i.e. scale 1).
        exclude: module-name prefixes left without an adapter.
    Returns:
        The adapted module names.
    """
    from peft import LoraConfig, inject_adapter_in_model

    if rank < 1:
        raise ValueError(f"the LoRA rank must be >= 1, got {rank}")
    if has_lora(network):
        raise ValueError("this network already has LoRA adapters (load a personalisation once)")
    targets = lora_targets(network, exclude)
    if not targets:
        raise ValueError("no Conv2d or Linear layer to adapt")
    config = LoraConfig(r=rank, lora_alpha=float(rank if alpha is None else alpha), lora_dropout=0.0,
                        target_modules=targets)
    inject_adapter_in_model(config, network, adapter_name=ADAPTER)
    for name, p in network.named_parameters():
        p.requires_grad_(".lora_" in name)
    return targets


def has_lora(network: nn.Module) -> bool:
    """Whether ``network`` holds (unmerged) LoRA layers."""
    from peft.tuners.lora import LoraLayer

    return any(isinstance(m, LoraLayer) for m in network.modules())


def lora_state(network: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' tensors (``A`` and ``B`` of every wrapped layer), by state-dict key."""
    return {k: v for k, v in network.state_dict().items() if ".lora_" in k}


def load_lora_state(network: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load :func:`lora_state` tensors into a network adapted with the same targets and rank."""
    own = lora_state(network)
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"the adapter does not fit this network: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise ValueError(f"adapter tensor {key} is {tuple(value.shape)}, the network's {tuple(own[key].shape)}")
    network.load_state_dict(state, strict=False)


@torch.no_grad()
def merge_lora(network: nn.Module) -> None:
    """Fold every adapter into its base weights and replace the wrappers by the base layers."""
    from peft.tuners.lora import LoraLayer

    wrapped = [(name, m) for name, m in network.named_modules() if isinstance(m, LoraLayer)]
    for name, layer in wrapped:
        layer.merge()
        parent, _, child = name.rpartition(".")
        setattr(network.get_submodule(parent) if parent else network, child, layer.get_base_layer())
