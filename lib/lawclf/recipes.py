"""Training-set recipes by name: what each one does, as a named type (``TrainConfig.recipe``).

:func:`lawclf.robustness.apply_recipe` carries a recipe out; this module only says what each
is, so the configuration (``lawclf.config``) can list the names without importing the machinery.
Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """What a recipe does to the train rows before a model sees them."""

    #: Spread the non-legal rows evenly over source groups.
    balance: bool = False
    #: Make ``hard_fraction`` of them the most legal-looking non-legal rows (out-of-fold TF-IDF).
    hard_negatives: bool = False
    #: Leave out the non-legal rows that out-of-fold model rates legal (suspected label noise).
    clean: bool = False
    #: Draw the hard negatives from every source group (each group's most legal-looking rows).
    spread_hard: bool = False


#: Every recipe, in order of how much each does.
RECIPE_TABLE: dict[str, Recipe] = {
    "plain": Recipe(),
    "balanced": Recipe(balance=True),
    "hardneg": Recipe(balance=True, hard_negatives=True),
    "robust": Recipe(balance=True, hard_negatives=True, clean=True),
    "diverse": Recipe(balance=True, hard_negatives=True, clean=True, spread_hard=True),
}
#: ``TrainConfig.recipe`` values.
RECIPE_NAMES: tuple[str, ...] = tuple(RECIPE_TABLE)

__all__ = ["Recipe", "RECIPE_TABLE", "RECIPE_NAMES"]
