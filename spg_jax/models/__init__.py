"""Flax Linen networks of SPGNet: stage-1 parsing (SPATN), stage-2 generator, flow network, D, VGG19."""
