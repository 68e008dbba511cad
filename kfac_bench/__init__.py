"""kfac-bench: Kronecker-factored approximations of the Fisher matrix (Koroko et al.) and a harness
that reproduces the paper's experiments."""

__version__ = "0.1.0"
