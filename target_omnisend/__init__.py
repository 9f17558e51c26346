"""target-omnisend: deliver audience segments from any Singer tap to Omnisend."""
