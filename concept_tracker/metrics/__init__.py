"""Pure metrics on interaction tensors: order profiles, bands, similarity, learning dynamics.

Nothing here runs a model or writes a file (``concept_tracker.sensitivity`` runs the model)."""

from .dynamics import Trajectory
from .profile import (
    Bands,
    BandSummary,
    OrderProfile,
    band_orders,
    band_summary,
    order_profile,
    salient_mask,
    stack_effects,
    sum_by_order,
)
from .similarity import (
    calibrated_train_test_similarity,
    reference_similarity,
    similarity,
    similarity_by_order,
    stability,
    train_test_similarity,
)
from .spindle import spindle_weight

__all__ = [
    "BandSummary",
    "Bands",
    "OrderProfile",
    "band_orders",
    "band_summary",
    "calibrated_train_test_similarity",
    "order_profile",
    "reference_similarity",
    "salient_mask",
    "similarity",
    "similarity_by_order",
    "stability",
    "stack_effects",
    "spindle_weight",
    "sum_by_order",
    "train_test_similarity",
    "Trajectory",
]
