"""``torch.optim`` optimizers with Kronecker-factored Fisher approximations.

``from kfac_bench.optim import KFAC, KPSVD, Deflation, Lanczos, KFACCorrected``
"""
from .kronecker_optimizer import (KFAC, KPSVD, OPTIMIZERS, Deflation, KFACCorrected,
                                  KroneckerFactoredOptimizer, Lanczos)

__all__ = ["KFAC", "KPSVD", "Deflation", "Lanczos", "KFACCorrected", "KroneckerFactoredOptimizer",
           "OPTIMIZERS"]
