"""A deterministic, synthetic click log for trying the whole chain.

Each row is one impression: a user, the candidate item shown, the user's click history (item
ids, the same vocabulary as the candidate), the device, the user's region, the price, and
whether it was clicked.

- Items have Zipf-like popularity and belong to one of a few topics; each has a quality.
- Each user prefers one topic; histories are drawn mostly from it. History lengths are long
  tailed (log-normal): some empty, most short, a few very long.
- The click probability rises with the share of the history in the candidate's topic and
  with item quality, depends on the device and the user's region (a high-cardinality
  categorical) and falls with the price, so a model that embeds history and candidate in one
  table can learn it. The user id itself carries nothing a model could use for unseen users.
- `--label-model item-bias` makes the label look like real ratings: the item's own bias
  (quality) dominates and the user's taste (history topic match) is a weaker signal, so the
  item's popularity alone is a strong baseline that a model has to beat.

    python -m examples.clicks.generate --rows 50000 --output examples/clicks/data/clicks.csv
    python -m examples.clicks.generate --label-model item-bias --output runs/bias/clicks.csv
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
from collections.abc import Sequence

import numpy as np

DEVICES = ("mobile", "desktop", "tablet")
DEVICE_PROBABILITIES = (0.6, 0.3, 0.1)
DEVICE_EFFECT = (0.3, -0.3, 0.0)
HEADER = ("user_id", "item_id", "history", "device", "region", "price", "clicked")
# label model -> (weight of the history's topic match, spread of the item quality): "topic"
# is driven by the user's taste, "item-bias" by the item itself.
LABEL_MODELS = {"topic": (3.0, 0.7), "item-bias": (1.0, 1.5)}


def generate(
    rows: int,
    seed: int = 7,
    items: int = 2000,
    users: int | None = None,
    topics: int = 10,
    regions: int = 2000,
    label_model: str = "topic",
    history_median: float = 12.0,
) -> list[tuple]:
    """Returns `rows` rows of (user_id, item_id, history, device, region, price, clicked).

    `label_model` picks how the click depends on taste and item (`LABEL_MODELS`);
    `history_median` is the median of the log-normal history lengths (12 gives about 21 ids a
    row with the long tail, 62 about 100).
    """
    if label_model not in LABEL_MODELS:
        raise ValueError(f"label_model must be one of {sorted(LABEL_MODELS)}, got {label_model!r}")
    match_weight, quality_spread = LABEL_MODELS[label_model]
    rng = np.random.default_rng(seed)
    users = users or max(rows // 6, 10)
    popularity = 1.0 / np.arange(1, items + 1) ** 1.05
    rng.shuffle(popularity)
    popularity /= popularity.sum()
    topic = rng.integers(0, topics, size=items)
    quality = rng.normal(0.0, quality_spread, size=items)
    global_cdf = np.cumsum(popularity)
    by_topic = []
    for t in range(topics):
        members = np.flatnonzero(topic == t)
        cdf = np.cumsum(popularity[members])
        by_topic.append((members, cdf / cdf[-1]))
    user_topic = rng.integers(0, topics, size=users)
    region_weights = 1.0 / np.arange(1, regions + 1) ** 0.8
    user_region = rng.choice(regions, size=users, p=region_weights / region_weights.sum())
    region_effect = rng.normal(0.0, 0.4, size=regions)
    user_activity = 1.0 / np.arange(1, users + 1) ** 0.6
    user_activity /= user_activity.sum()

    user = rng.choice(users, size=rows, p=user_activity)
    lengths = np.floor(rng.lognormal(np.log(history_median), 1.0, size=rows)).astype(int)
    lengths[rng.random(rows) < 0.05] = 0
    very_long = rng.random(rows) < 0.003
    lengths[very_long] = rng.integers(400, 1500, size=int(very_long.sum()))
    device = rng.choice(len(DEVICES), size=rows, p=DEVICE_PROBABILITIES)
    price = np.round(rng.lognormal(3.0, 0.8, size=rows), 2)
    log_price = (np.log(price) - 3.0) / 0.8

    out = []
    for i in range(rows):
        members, cdf = by_topic[user_topic[user[i]]]
        n = int(lengths[i])
        draws = rng.random((2, n + 1))
        in_topic = members[np.minimum(np.searchsorted(cdf, draws[1]), len(members) - 1)]
        anywhere = np.minimum(np.searchsorted(global_cdf, draws[1]), items - 1)
        picked = np.where(draws[0] < 0.7, in_topic, anywhere)  # the last draw is the candidate
        history = picked[:n]
        candidate = int(in_topic[n] if draws[0, n] < 0.5 else anywhere[n])
        match = float(np.mean(topic[history] == topic[candidate])) if n else 0.0
        logit = (
            -1.2
            + match_weight * match
            + quality[candidate]
            + DEVICE_EFFECT[device[i]]
            + region_effect[user_region[user[i]]]
            - 0.5 * log_price[i]
        )
        clicked = int(rng.random() < 1.0 / (1.0 + np.exp(-logit)))
        out.append(
            (
                f"u{user[i]}",
                f"i{candidate}",
                " ".join(f"i{h}" for h in history),
                DEVICES[device[i]],
                f"r{user_region[user[i]]}",
                f"{price[i]:.2f}",
                clicked,
            )
        )
    return out


RATINGS_HEADER = (
    "rating_id",
    "user_id",
    "item_id",
    "history",
    "genres",
    "age",
    "gender",
    "occupation",
    "liked",
)
GENRES = 19
AGES = ("18", "25", "35", "45", "50", "56", "1")
OCCUPATIONS = 21


def generate_ratings(
    rows: int = 34_000,
    seed: int = 7,
    items: int = 1700,
    users: int = 950,
) -> list[tuple]:
    """Rows shaped like a public movie-ratings log, one rating a row.

    Returns `rows` rows of (rating_id, user_id, item_id, history, genres, age, gender,
    occupation, liked). Each user rates a long, long-tailed number of distinct items in
    time order (popular items first more often); a row is one of those ratings and its
    `history` is every item the user rated before it, newest last: long and unique to the
    user. `liked` (rating >= 4) follows the item's quality and the user's generosity, a
    strong latent trait no column shows, with a weak genre taste; age, gender and
    occupation barely matter. So an item's popularity is a strong baseline, a user's
    generosity helps only where the user was seen in training, and a history identifies
    its user.
    """
    rng = np.random.default_rng(seed)
    # Long-tailed item popularity: the top tenth of the items hold about half the ratings.
    weights = 1.0 / np.arange(1, items + 1) ** 1.15
    rng.shuffle(weights)
    weights /= weights.sum()
    log_pop = np.log(weights)
    quality = rng.normal(0.0, 1.05, size=items) + 0.25 * (log_pop - log_pop.mean()) / log_pop.std()
    item_genres = [
        np.sort(rng.choice(GENRES, size=int(rng.integers(1, 7)) if rng.random() < 0.25 else
                           int(rng.integers(1, 4)), replace=False))
        for _ in range(items)
    ]  # fmt: skip
    generosity = rng.normal(0.0, 1.1, size=users)
    taste = rng.normal(0.0, 0.15, size=(users, GENRES))
    age = rng.integers(0, len(AGES), size=users)
    gender = rng.random(users) < 0.3
    occupation = rng.integers(0, OCCUPATIONS, size=users)
    # Demographics move generosity a little, so their baselines stay near 0.5.
    generosity += 0.03 * (age - 3) / 3 + 0.03 * gender
    # Every user's whole rating sequence; a row samples it, so histories run long.
    counts = np.clip(np.round(rng.lognormal(np.log(75.0), 0.8, size=users)), 20, 737)
    counts = np.minimum(counts.astype(int), items)  # a user rates each item once at most
    keep = rows / counts.sum()
    out = []
    rating = 0
    for u in range(users):
        # Distinct items drawn by popularity (Gumbel top-k), in rating order.
        keys = np.log(weights) + rng.gumbel(size=items)
        sequence = np.argsort(-keys)[: counts[u]]
        sampled = np.flatnonzero(rng.random(counts[u]) < keep)
        for position in sampled:
            item = int(sequence[position])
            genres = item_genres[item]
            logit = -0.1 + quality[item] + generosity[u] + taste[u, genres].mean()
            liked = int(rng.random() < 1.0 / (1.0 + np.exp(-logit)))
            out.append(
                (
                    f"e{rating}",
                    f"u{u}",
                    f"m{item}",
                    " ".join(f"m{h}" for h in sequence[:position]),
                    " ".join(f"g{g}" for g in genres),
                    AGES[age[u]],
                    "F" if gender[u] else "M",
                    f"o{occupation[u]}",
                    liked,
                )
            )
            rating += 1
    order = rng.permutation(len(out))
    return [out[i] for i in order[:rows]] if len(out) > rows else [out[i] for i in order]


def _header(rows: Sequence[tuple]) -> tuple:
    """The column names of generated rows: clicks or ratings."""
    return RATINGS_HEADER if rows and len(rows[0]) == len(RATINGS_HEADER) else HEADER


def _records(rows: Sequence[tuple]) -> list[dict]:
    """Rows as records: the lists (history, genres) lists of ids, the price a number."""
    header = _header(rows)
    records = []
    for row in rows:
        record = dict(zip(header, row, strict=True))
        for name in ("history", "genres"):
            if name in record:
                record[name] = record[name].split()
        if "price" in record:
            record["price"] = float(record["price"])
        records.append(record)
    return records


def write_csv(path: str, rows: Sequence[tuple]) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wt", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(_header(rows))
        writer.writerows(rows)


def write_jsonl(path: str, rows: Sequence[tuple]) -> None:
    """One JSON object a line; the history is a JSON array."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wt") as f:
        for record in _records(rows):
            f.write(json.dumps(record) + "\n")


def write_tfrecord(path: str, rows: Sequence[tuple]) -> None:
    """tf.Examples; the history is a repeated bytes feature."""
    import tensorflow as tf

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    options = "GZIP" if path.endswith(".gz") else None
    with tf.io.TFRecordWriter(path, options=options) as writer:
        for record in _records(rows):
            example = tf.train.Example()
            feature = example.features.feature
            for name, value in record.items():
                if isinstance(value, list):
                    feature[name].bytes_list.value.extend(v.encode() for v in value)
                elif isinstance(value, str):
                    feature[name].bytes_list.value.append(value.encode())
                elif isinstance(value, int):
                    feature[name].int64_list.value.append(value)
                else:
                    feature[name].float_list.value.append(value)
            writer.write(example.SerializeToString())


def write_parquet(path: str, rows: Sequence[tuple]) -> None:
    """A Parquet file; the history is a list<string> column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    pq.write_table(pa.Table.from_pylist(_records(rows)), path)


WRITERS = {
    "csv": write_csv,
    "jsonl": write_jsonl,
    "tfrecord": write_tfrecord,
    "parquet": write_parquet,
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--variant",
        choices=("clicks", "ratings"),
        default="clicks",
        help="clicks: the click log (default); ratings: a movie-ratings log (about 950 users, "
        "1,700 items, long unique histories, a label driven by item quality and a hidden "
        "user generosity), with examples/clicks/ratings.toml",
    )
    parser.add_argument("--rows", type=int, default=None, help="default 50,000; ratings 34,000")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", default="examples/clicks/data/clicks.csv")
    parser.add_argument(
        "--format",
        choices=sorted(WRITERS),
        default="csv",
        help="file format (a .gz output is compressed)",
    )
    parser.add_argument(
        "--label-model",
        choices=sorted(LABEL_MODELS),
        default="topic",
        help="topic: clicks follow the user's taste (default); item-bias: the item's own "
        "bias dominates and taste is weaker, as in real ratings",
    )
    parser.add_argument(
        "--items",
        type=int,
        default=2000,
        help="catalogue size; a large one leaves items of the eval split unseen in training",
    )
    parser.add_argument(
        "--history-median",
        type=float,
        default=12.0,
        help="median history length (default 12: about 21 ids a row; 62: about 100)",
    )
    args = parser.parse_args(argv)
    if args.variant == "ratings":
        rows = generate_ratings(args.rows or 34_000, seed=args.seed)
    else:
        rows = generate(
            args.rows or 50_000,
            seed=args.seed,
            items=args.items,
            label_model=args.label_model,
            history_median=args.history_median,
        )
    WRITERS[args.format](args.output, rows)
    print(f"Wrote {len(rows)} rows to {args.output} ({args.format})")


if __name__ == "__main__":
    main()
