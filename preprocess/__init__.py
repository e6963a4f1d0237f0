"""Pure preprocessing over tensors/arrays: try-on inputs, masks, DensePose rendering, captions."""
