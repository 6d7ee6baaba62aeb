"""Training FLOPs per step from the model's matrix-multiply weights: the 6·N·tokens rule, split by component so
frozen parts count only what they really compute.

For a component ``c`` with ``N_c`` matmul weights (Linear and convolution weights, the LM head included, the
embedding table excluded: a lookup is no matmul), ``N_c^t`` of them trainable, seeing ``t_c`` tokens per step::

    FLOPs_c = t_c · (2·N_c                      forward
                     + 2·N_c · [grad flows]     backward to the inputs: some weight at or before c trains
                     + 2·N_c^t                  backward to the trained weights
                     + 2·N_c · [recomputed])    gradient checkpointing re-runs the forward of c's blocks

Full fine-tuning is the familiar 6·N·t; LoRA on the language model about 4·N·t there (frozen weights still pass
gradients back to the adapters below them); a frozen vision tower in front of everything trainable costs only
its forward, 2·N·patches. Tokens: vision tower = image patches, projector = visual tokens, language model and
head = real (non-padding) tokens, so padding is waste, not work. Attention's own s² term is left out, as in the
usual MFU convention (at 2k tokens it adds about 5 % for a 7B model).
"""

from __future__ import annotations

from torch import nn

from ..models.spec import COMPONENTS, FamilySpec

_MATMULS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def matmul_weights(model: nn.Module, spec: FamilySpec) -> dict[str, tuple[int, int]]:
    """Component -> (matmul weights, of which trainable). LoRA's A/B count in the layer they adapt; a PEFT
    ``modules_to_save`` component counts once (its trained copy)."""
    table = {c: [0, 0] for c in COMPONENTS}
    for name, module in model.named_modules():
        if not isinstance(module, _MATMULS) or ".original_module" in name:
            continue
        component = spec.component_of(_strip_peft(name))
        if component is None:
            continue
        weight = module.weight
        # in * out, not weight.numel(): 4-bit weights are stored packed (QLoRA) but multiply at full size.
        n = module.in_features * module.out_features if isinstance(module, nn.Linear) else weight.numel()
        table[component][0] += n
        if weight.requires_grad:
            table[component][1] += n
    return {c: (n, t) for c, (n, t) in table.items()}


def train_flops(weights: dict[str, tuple[int, int]], tokens: dict[str, float],
                checkpointing: bool = False) -> float:
    """FLOPs of one training step (forward + backward) by the formula in the module docstring.

    ``tokens``: per component (``vision`` patches, ``projector`` visual tokens, ``language`` and ``lm_head`` real
    tokens) summed over the step's batches.
    """
    total, trains_before = 0.0, False
    for component in COMPONENTS:
        n, trainable = weights.get(component, (0, 0))
        t = tokens.get(component, 0)
        trains_before = trains_before or trainable > 0
        per_token = 2 * n + 2 * trainable
        if trains_before:
            per_token += 2 * n
            if checkpointing and component != "lm_head":
                per_token += 2 * n
        total += per_token * t
    return total


def step_tokens(text_and_visual: float, visual: float, patches_per_visual_token: float) -> dict[str, float]:
    """Per-component token counts of a step from its real tokens (visual included) and visual tokens."""
    return {"vision": visual * patches_per_visual_token, "projector": visual, "language": text_and_visual,
            "lm_head": text_and_visual}


def _strip_peft(name: str) -> str:
    name = name.removeprefix("base_model.model.")
    for marker in (".modules_to_save.default", ".base_layer", ".lora_A.default", ".lora_B.default"):
        name = name.replace(marker, "")
    return name
