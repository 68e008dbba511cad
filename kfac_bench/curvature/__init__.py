"""The mathematics of kfac-bench: Kronecker sums, implicit zigzag products, power SVD and Lanczos
bidiagonalisation, the five approximations, damped inverses and exact-block error metrics. Nothing
here knows about training loops, datasets or Hydra."""
from .approximations import (APPROXIMATIONS, KFAC, KPSVD, Approximation, Deflation, FitResult,
                             KFACCorrected, Lanczos, make_approximation)
from .inverse import CurvatureError, KroneckerInverse, TwoTermKroneckerInverse, damped_inverse
from .kronecker import KroneckerSum, SampledFisherBlock, ZigzagOperator, unvec, vec
from .stats import LIKELIHOODS, Likelihood, collect_statistics, get_likelihood
from .svd import SingularTriplets, lanczos_svd, power_svd

__all__ = [
    "APPROXIMATIONS", "KFAC", "KPSVD", "Approximation", "Deflation", "FitResult", "KFACCorrected",
    "Lanczos", "make_approximation", "CurvatureError", "KroneckerInverse", "TwoTermKroneckerInverse",
    "damped_inverse", "KroneckerSum", "SampledFisherBlock", "ZigzagOperator", "unvec", "vec",
    "LIKELIHOODS", "Likelihood", "collect_statistics", "get_likelihood", "SingularTriplets",
    "lanczos_svd", "power_svd",
]
