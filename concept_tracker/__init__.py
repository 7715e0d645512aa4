"""concept-tracker: watch the interactive concepts a PyTorch model learns while it trains."""

from .engine import compute_interactions
from .interactions import Interactions
from .players import FeatureMaskPlayers, ImagePatchPlayers, Players, TabularPlayers, TokenPlayers, word_ids
from .transforms import and_inverse, and_transform, or_inverse, or_transform, orders

__version__ = "0.1.0"

__all__ = [
    "FeatureMaskPlayers",
    "ImagePatchPlayers",
    "Interactions",
    "Players",
    "TabularPlayers",
    "TokenPlayers",
    "and_inverse",
    "and_transform",
    "compute_interactions",
    "or_inverse",
    "or_transform",
    "orders",
    "word_ids",
]
