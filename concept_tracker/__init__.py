"""concept-tracker: watch the interactive concepts a PyTorch model learns while it trains.

The core never imports ``concept_tracker.integrations`` (transformers, accelerate, lightning).
"""

from .and_or import AndOrConfig, AndOrResult, decompose
from .config import BudgetConfig, OutputConfig, ReadingsConfig
from .engine import compute_interactions
from .interactions import Interactions
from .language_models import prompt_answer_batch
from .metrics import (
    Trajectory,
    band_orders,
    band_summary,
    order_profile,
    reference_similarity,
    similarity,
    similarity_by_order,
    stability,
    train_test_similarity,
)
from .players import FeatureMaskPlayers, ImagePatchPlayers, Players, TabularPlayers, TokenPlayers, word_ids
from .probes import ProbeSet, select_probes
from .rundir import new_run_dir
from .schedules import Schedule, at_steps, every, log_spaced
from .sensitivity import adversarial_inconsistency, noise_sensitivity
from .spectrum import OrderSpectrum, order_spectrum
from .store import list_steps, load_step
from .summary import StepSummary
from .tracker import DEFAULT_SCHEDULE, ConceptTracker
from .transforms import and_inverse, and_transform, or_inverse, or_transform, orders

__version__ = "0.1.0"

__all__ = [
    "AndOrConfig",
    "AndOrResult",
    "BudgetConfig",
    "ConceptTracker",
    "DEFAULT_SCHEDULE",
    "FeatureMaskPlayers",
    "ImagePatchPlayers",
    "Interactions",
    "OutputConfig",
    "Players",
    "OrderSpectrum",
    "ProbeSet",
    "ReadingsConfig",
    "Schedule",
    "StepSummary",
    "TabularPlayers",
    "TokenPlayers",
    "Trajectory",
    "adversarial_inconsistency",
    "and_inverse",
    "and_transform",
    "at_steps",
    "band_orders",
    "band_summary",
    "compute_interactions",
    "decompose",
    "every",
    "list_steps",
    "load_step",
    "log_spaced",
    "new_run_dir",
    "noise_sensitivity",
    "or_inverse",
    "or_transform",
    "order_profile",
    "order_spectrum",
    "orders",
    "prompt_answer_batch",
    "reference_similarity",
    "select_probes",
    "similarity",
    "similarity_by_order",
    "stability",
    "train_test_similarity",
    "word_ids",
]
