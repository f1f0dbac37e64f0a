"""Greedy generation, grammar-constrained decoding, and the confidence of what was generated."""
