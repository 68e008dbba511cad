"""``torch.optim`` optimizers with Kronecker-factored Fisher approximations.

``from kfac_bench.optim import KFAC, KPSVD, Deflation, Lanczos, KFACCorrected, LanczosK``
"""
from .kronecker_optimizer import (KFAC, KPSVD, OPTIMIZERS, Deflation, KFACCorrected,
                                  KroneckerFactoredOptimizer, Lanczos, LanczosK)

__all__ = ["KFAC", "KPSVD", "Deflation", "Lanczos", "KFACCorrected", "LanczosK", "KroneckerFactoredOptimizer",
           "OPTIMIZERS"]
