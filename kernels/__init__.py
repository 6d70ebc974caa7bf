"""Numba CPU and CUDA post-processing kernels (peaks, grouping, refine). NumPy + Numba only, never torch."""
