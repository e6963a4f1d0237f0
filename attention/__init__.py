"""Attention math as plain torch: the family-agnostic reference-attention core (reference_spec, reference_bank,
reference_attention, garment_features), IDM-VTON's adapter on it (tryon_patch), its IP attention and Resampler."""
