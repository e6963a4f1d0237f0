"""IDM-VTON's attention math as plain torch: Resampler, IP attention, reference attention, GarmentNet."""
