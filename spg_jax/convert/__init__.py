"""Conversion of the official PyTorch checkpoints into spg_jax weights files.

Each `<network>.py` module maps one official state_dict onto the Flax variables of the matching
module; `state_dict.py` holds the bookkeeping that makes every key accounted for; `__main__.py` is
the command line. torch is imported only to unpickle `.pth` files (`torch_io.py`).
"""
