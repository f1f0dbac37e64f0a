"""Write a small restaurant-booking extraction dataset: a sentence in, a nested JSON object out.

    python scripts/example_bookings.py [--out data/bookings.jsonl] [--n 600] [--seed 0]

It stands in for a user's own data in the README's "Your own data" walk-through (no hub needed): intents with
slots of several types (a number of people, a day, a time, an optional list of requests) under an `annotation`
key, the input under `utterance`, and an `id` column that is neither.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

PLACES = ["Luigi's", "The Golden Wok", "Casa Lola", "Blue Fin", "Le Petit Nord", "Saffron House", "Noodle Bar 9"]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "tomorrow", "tonight"]
TIMES = ["6pm", "6:30pm", "7pm", "7:30pm", "8pm", "8:15pm", "noon", "1pm"]
REQUESTS = ["window seat", "high chair", "quiet table", "terrace", "wheelchair access"]


def booking(rng: random.Random) -> dict:
    place, day, time, people = rng.choice(PLACES), rng.choice(DAYS), rng.choice(TIMES), rng.randint(1, 12)
    asks = rng.sample(REQUESTS, rng.choice([0, 0, 1, 2]))
    extra = f", {' and '.join(asks)} please" if asks else ""
    text = rng.choice(
        [
            f"Book a table for {people} at {place} {day} at {time}{extra}.",
            f"Could you reserve {place} for {people} people on {day}, {time}{extra}?",
            f"I need a table at {place}, {people} of us, {day} around {time}{extra}.",
        ]
    )
    slots = {"restaurant": place, "people": people, "day": day, "time": time} | ({"requests": asks} if asks else {})
    return {"utterance": text, "annotation": {"intent": "book_table", "slots": slots}}


def other(rng: random.Random) -> dict:
    place = rng.choice(PLACES)
    if rng.random() < 0.5:
        day = rng.choice(DAYS)
        return {
            "utterance": f"Please cancel my booking at {place} for {day}.",
            "annotation": {"intent": "cancel_booking", "slots": {"restaurant": place, "day": day}},
        }
    return {
        "utterance": rng.choice([f"What time does {place} open?", f"When is {place} open?"]),
        "annotation": {"intent": "opening_hours", "slots": {"restaurant": place}},
    }


def rows(n: int, seed: int) -> list[dict]:
    rng, seen, out = random.Random(seed), set(), []
    while len(out) < n:
        row = booking(rng) if rng.random() < 0.75 else other(rng)
        if row["utterance"] not in seen:
            seen.add(row["utterance"])
            out.append({"id": len(out) + 1, **row})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("data/bookings.jsonl"))
    p.add_argument("--n", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows(args.n, args.seed)))
    print(f"wrote {args.n} rows to {args.out}")


if __name__ == "__main__":
    main()
