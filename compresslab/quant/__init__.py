"""Quantized modules and the sensitivity, allocation and swap machinery of the quantizing passes."""
