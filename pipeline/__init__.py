"""What a node runs: the pipelines that tie preprocessing, networks and attention together (IDM-VTON apply, mask, crop, DensePose, caption)."""
