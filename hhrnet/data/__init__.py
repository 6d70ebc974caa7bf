"""Datasets, augmentation and the built-in synthetic data."""
