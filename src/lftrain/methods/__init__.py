"""Learning objectives: a Method turns a batch into a summed loss; the one `fit()` does the rest."""

from lftrain.registry import Registry

METHODS: Registry = Registry("method")

# (registers each method: contrastive-few-shot, distill, mlm, self-training, supervised)
from lftrain.methods import contrastive, distill, mlm, self_training, supervised  # noqa: E402,F401


def build_method(config, task):
    return METHODS.get(config.type)(config, task)
