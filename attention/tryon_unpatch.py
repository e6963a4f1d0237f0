"""The inverse of `patch_tryon_model`: a clone of a try-on MODEL without IDM-VTON's patches, ready for a fresh Apply.

Removed: the garment reference attention (attn1 replaces or attn1 patch) and the IP attention (attn2 replaces) that
belong to the model's feature bank, the bank's wrappers and its attachment. Everything else stays: weight patches
(LoRAs loaded before or after Apply), object patches (e.g. model sampling), other nodes' patches.
"""

from __future__ import annotations

from .reference_bank import ReferenceFeatureBank
from .shared_state_patch import SharedStatePatch
from .tryon_patch import WRAPPER_KEY, tryon_bank


def _belongs_to(patch, bank: ReferenceFeatureBank) -> bool:
    return isinstance(patch, SharedStatePatch) and patch.owner is bank  # every try-on patch is owned by the model's bank


def without_tryon_patches(model):
    """A clone of `model` (a MODEL from IDM-VTON Apply) with the try-on patches removed; a model without them is cloned as it is."""
    bank = tryon_bank(model)
    clone = model.clone()  # model_options are deep-copied (the patch objects themselves are shared)
    if bank is None:
        return clone
    options = clone.model_options.setdefault("transformer_options", {})
    replaces = options.get("patches_replace", {})
    for kind in ("attn1", "attn2"):
        table = replaces.get(kind)
        if table is None:
            continue
        for key in [key for key, patch in table.items() if _belongs_to(patch, bank)]:
            del table[key]
        if not table:
            del replaces[kind]
    if "patches_replace" in options and not replaces:
        del options["patches_replace"]
    patches = options.get("patches", {})
    for kind in list(patches):
        patches[kind] = [patch for patch in patches[kind] if not _belongs_to(patch, bank)]
        if not patches[kind]:
            del patches[kind]
    if "patches" in options and not patches:
        del options["patches"]
    for wrapper_type in list(clone.wrappers):
        clone.remove_wrappers_with_key(wrapper_type, WRAPPER_KEY)
    clone.remove_attachments(WRAPPER_KEY)
    return clone
