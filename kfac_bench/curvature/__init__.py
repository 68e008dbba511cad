"""The mathematics of kfac-bench: Kronecker sums, implicit zigzag products, power SVD and Lanczos
bidiagonalisation, the approximations (the paper's five and Lanczos of any Kronecker rank), curvature
blocks, damped inverses and exact-block error metrics. Nothing here knows about training loops,
datasets or Hydra."""
from .approximations import (APPROXIMATIONS, KFAC, KPSVD, Approximation, Deflation, FitResult,
                             KFACCorrected, Lanczos, LanczosK, make_approximation)
from .block import CurvatureBlock
from .inverse import (CurvatureError, KroneckerInverse, KroneckerSumInverse, TwoTermKroneckerInverse,
                      damped_inverse)
from .kronecker import KroneckerSum, SampledFisherBlock, ZigzagOperator, unvec, vec
from .stats import LIKELIHOODS, Likelihood, collect_statistics, get_likelihood
from .svd import SingularTriplets, lanczos_svd, power_svd

__all__ = [
    "APPROXIMATIONS", "KFAC", "KPSVD", "Approximation", "Deflation", "FitResult", "KFACCorrected",
    "Lanczos", "LanczosK", "make_approximation", "CurvatureBlock", "CurvatureError", "KroneckerInverse",
    "KroneckerSumInverse", "TwoTermKroneckerInverse",
    "damped_inverse", "KroneckerSum", "SampledFisherBlock", "ZigzagOperator", "unvec", "vec",
    "LIKELIHOODS", "Likelihood", "collect_statistics", "get_likelihood", "SingularTriplets",
    "lanczos_svd", "power_svd",
]
