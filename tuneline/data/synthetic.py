"""Small ViGGO-shaped data made from templates: the smoke config and tests need data without any hub."""

from __future__ import annotations

import random

_NAMES = ["Halo", "Portal 2", "Celeste", "Doom", "Hades", "Tetris", "Myst", "Braid", "Limbo", "Fez"]
_GENRES = ["shooter", "puzzle", "platformer", "strategy", "racing"]
_RATINGS = ["poor", "average", "good", "excellent"]
_YEARS = [str(y) for y in range(2001, 2021)]


def _row(rng: random.Random) -> dict[str, str]:
    name, genre, rating, year = rng.choice(_NAMES), rng.choice(_GENRES), rng.choice(_RATINGS), rng.choice(_YEARS)
    kind = rng.randrange(3)
    if kind == 0:
        return {
            "meaning_representation": f"inform(name[{name}], release_year[{year}], genres[{genre}])",
            "target": f"{name} is a {genre} game released in {year}.",
        }
    if kind == 1:
        return {
            "meaning_representation": f"give_opinion(name[{name}], rating[{rating}])",
            "target": f"I think {name} is {rating}.",
        }
    return {
        "meaning_representation": f"request(genres[{genre}])",
        "target": f"Do you know any good {genre} games?",
    }


def synthetic_viggo(n_train: int = 96, n_validation: int = 16, n_test: int = 24, seed: int = 0) -> dict:
    """Every utterance is distinct, so the data passes the duplicate and leakage checks like clean data should."""
    rng = random.Random(seed)
    rows: dict[str, dict] = {}
    while len(rows) < n_train + n_validation + n_test:
        row = _row(rng)
        rows.setdefault(row["target"], row)
    ordered = list(rows.values())
    return {
        "train": ordered[:n_train],
        "validation": ordered[n_train : n_train + n_validation],
        "test": ordered[n_train + n_validation :],
    }


def corpus(seed: int = 0) -> list[str]:
    """Text covering the synthetic vocabulary, for training the tiny tokenizer."""
    rows = [r for split in synthetic_viggo(400, 0, 0, seed).values() for r in split]
    return [r["target"] for r in rows] + [r["meaning_representation"] for r in rows]
