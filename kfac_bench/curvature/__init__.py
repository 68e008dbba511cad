"""The mathematics of kfac-bench: Kronecker sums, implicit zigzag products, power SVD and Lanczos
bidiagonalisation, the approximations (the paper's five, Lanczos of any Kronecker rank and EKFAC), curvature
blocks, damped inverses and exact-block error metrics. Nothing here knows about training loops,
datasets, Hydra or the list of methods (:mod:`kfac_bench.registry`, above this package): importing it
imports nothing else of kfac-bench and changes no setting. The interfaces a method implements are in
:mod:`kfac_bench.curvature.estimate`."""
from .approximations import KFAC, KPSVD, Approximation, Deflation, FitResult, KFACCorrected, Lanczos, LanczosK
from .block import CurvatureBlock
from .ekfac import EKFAC, EigenbasisDiagonal
from .estimate import CurvatureEstimate, DampedInverse, EstimationMethod, FittedEstimate, MeasurableEstimate
from .inverse import (CurvatureError, KroneckerInverse, KroneckerSumInverse, TwoTermKroneckerInverse,
                      damped_inverse)
from .kronecker import KroneckerSum, SampledFisherBlock, ZigzagOperator, unvec, vec
from .spatial import SPATIAL_TREATMENTS, SpatialFisherBlock, spatial_block
from .stats import LIKELIHOODS, Likelihood, collect_statistics, get_likelihood
from .svd import SingularTriplets, lanczos_svd, power_svd

__all__ = [
    "KFAC", "KPSVD", "Approximation", "Deflation", "FitResult", "KFACCorrected",
    "Lanczos", "LanczosK", "CurvatureBlock", "CurvatureEstimate", "DampedInverse", "EstimationMethod",
    "FittedEstimate", "MeasurableEstimate", "EKFAC", "EigenbasisDiagonal", "CurvatureError", "KroneckerInverse",
    "KroneckerSumInverse", "TwoTermKroneckerInverse",
    "damped_inverse", "KroneckerSum", "SampledFisherBlock", "ZigzagOperator", "unvec", "vec",
    "SPATIAL_TREATMENTS", "SpatialFisherBlock", "spatial_block",
    "LIKELIHOODS", "Likelihood", "collect_statistics", "get_likelihood", "SingularTriplets",
    "lanczos_svd", "power_svd",
]
