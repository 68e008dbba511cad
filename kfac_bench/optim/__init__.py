"""``torch.optim`` optimizers with Kronecker-factored Fisher approximations.

``from kfac_bench.optim import KFAC, KPSVD, Deflation, Lanczos, KFACCorrected, LanczosK, EKFAC``

The harness drives them, and any ``torch.optim`` optimizer, through one interface,
:class:`~kfac_bench.optim.training.TrainingOptimizer` (:mod:`kfac_bench.optim.training`). The table
of optimizers by method name is the registry's (``kfac_bench.registry.OPTIMIZERS``).
"""
from .kronecker_optimizer import (EKFAC, KFAC, KPSVD, Deflation, KFACCorrected, KroneckerFactoredOptimizer, Lanczos,
                                 LanczosK)
from .training import FirstOrder, StepReport, TrainingOptimizer, as_training_optimizer

__all__ = ["KFAC", "KPSVD", "Deflation", "Lanczos", "KFACCorrected", "LanczosK", "EKFAC", "KroneckerFactoredOptimizer",
           "FirstOrder", "StepReport", "TrainingOptimizer", "as_training_optimizer"]
