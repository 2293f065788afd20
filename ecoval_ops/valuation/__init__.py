"""The EcoVal method (``shared/spec/ecoval-method.md``): numpy and torch only.

No Spark, MLflow or Airflow import happens here or below; torch loads only when a model trains.
"""

from __future__ import annotations

from ecoval_ops.valuation.clustering import ClusterModel, FeatureSpace, KMeansClusterer
from ecoval_ops.valuation.ecoval import EcoVal
from ecoval_ops.valuation.learners import SklearnLearner
from ecoval_ops.valuation.plan import TrainingPlan
from ecoval_ops.valuation.production import ClusterGame, LeaveOutUtilities, SecondOrderProduction
from ecoval_ops.valuation.propagation import NeighbourPropagator
from ecoval_ops.valuation.propagation_state import PropagationState, RowInputs
from ecoval_ops.valuation.protocols import Clusterer, Learner, ProductionFunction, Propagator
from ecoval_ops.valuation.result import ValuationResult
from ecoval_ops.valuation.trainer import MLPClassifier, SoftmaxRegression

__all__ = [
    "ClusterGame",
    "ClusterModel",
    "Clusterer",
    "EcoVal",
    "FeatureSpace",
    "KMeansClusterer",
    "Learner",
    "LeaveOutUtilities",
    "MLPClassifier",
    "NeighbourPropagator",
    "ProductionFunction",
    "PropagationState",
    "Propagator",
    "RowInputs",
    "SecondOrderProduction",
    "SklearnLearner",
    "SoftmaxRegression",
    "TrainingPlan",
    "ValuationResult",
]
