"""Learning objectives: a Method turns a batch into a summed loss; the one `fit()` does the rest."""

from lftrain.registry import Registry

METHODS: Registry = Registry("method")

from lftrain.methods import distill, supervised  # noqa: E402,F401  (registers)


def build_method(config, task):
    return METHODS.get(config.type)(config, task)
