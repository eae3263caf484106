"""Data sets of 100k objects: the listing summary and the bounded thread-pool map."""

from __future__ import annotations

import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import pytest
from pipeline_common.manifest import Manifest, find_problems, summarize_objects
from pipeline_common.parallel import bounded_map

OBJECTS = 100_000
CLASSES = 133
# What the Lambda may spend on the listing's summary at 100k keys (its MemorySize is 1769 MB).
SUMMARY_PEAK_BYTES = 64 * 1024 * 1024


def listing_of(count: int, classes: int) -> list[tuple[str, int]]:
    splits = ("train",) * 8 + ("valid", "test")
    return [
        (f"{splits[i % 10]}/{i % classes:03d}.class-{i % classes}/{i:06d}.jpg", 40_000 + i % 7)
        for i in range(count)
    ]


def test_summarize_objects_100k_keys_counts_all_within_bounded_memory():
    keys = listing_of(OBJECTS, CLASSES)
    tracemalloc.start()
    try:
        listing = summarize_objects(iter(keys))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert listing.image_count == OBJECTS
    assert len(listing.counts) == 3 * CLASSES
    assert peak < SUMMARY_PEAK_BYTES, f"{peak / 2**20:.0f} MiB for {OBJECTS} keys"


def test_find_problems_100k_keys_one_missing_file_is_named():
    keys = listing_of(OBJECTS, CLASSES)
    classes = sorted({key.split("/")[1] for key, _ in keys})
    splits: dict[str, dict[str, int]] = {"train": {}, "valid": {}, "test": {}}
    for key, _ in keys:
        split, class_name, _ = key.split("/")
        splits[split][class_name] = splits[split].get(class_name, 0) + 1
    manifest = Manifest.model_validate(
        {
            "schema_version": 1,
            "dataset": "dogs",
            "classes": classes,
            "splits": splits,
            "file_count": OBJECTS,
            "files": [{"key": key, "size": size} for key, size in keys],
        }
    )
    missing = keys.pop(50_000)[0]

    problems = find_problems(manifest, "dogs", summarize_objects(keys))

    assert f"{missing} is listed in manifest.json but not in the bucket" in problems


def test_bounded_map_keeps_at_most_limit_in_flight():
    limit, started, finished = 8, [0], [0]
    lock = threading.Lock()
    in_flight_seen = []

    def work(item: int) -> int:
        with lock:
            started[0] += 1
        time.sleep(0.001)
        return item * 2

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = {}
        for item, doubled in bounded_map(pool, work, range(500), limit):
            finished[0] += 1
            with lock:
                in_flight_seen.append(started[0] - finished[0])
            results[item] = doubled

    assert results == {i: 2 * i for i in range(500)}
    assert max(in_flight_seen) <= limit


def test_bounded_map_raises_the_items_error_and_starts_nothing_more():
    calls = []

    def work(item: int) -> int:
        calls.append(item)
        if item == 3:
            raise ValueError("item 3 is bad")
        return item

    with ThreadPoolExecutor(max_workers=1) as pool, pytest.raises(ValueError, match="item 3"):
        for _ in bounded_map(pool, work, range(10_000), 4):
            pass

    assert len(calls) < 20
