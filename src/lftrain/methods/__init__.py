"""Learning objectives by short name: a Method turns a batch into a summed loss; the one `fit()` does the rest.

The contract is `methods/base.py`; each module registers its method there."""

from lftrain.methods import contrastive, distill, mlm, preference, self_training, supervised  # noqa: F401  (registers)
from lftrain.methods.base import METHODS, Method, build_method

__all__ = ["METHODS", "Method", "build_method"]
