"""What the quantizing passes share: Hessian sensitivity, bit allocation, hawq's settings and budget
checks, and guided int8 (the fake-quant modules themselves are ``models/quantized.py``: checkpoints
and exports need them)."""
