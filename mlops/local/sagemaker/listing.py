"""Filtering, sorting and NextToken pagination shared by the List* operations."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from mlops.local.sagemaker.errors import ValidationException

T = TypeVar("T")
DEFAULT_MAX_RESULTS = 10  # SageMaker's default page size for these List operations


def encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def decode_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
    except (binascii.Error, ValueError, KeyError, TypeError) as error:
        raise ValidationException(f"Invalid pagination token: {token}") from error
    if not isinstance(offset, int) or offset < 0:
        raise ValidationException(f"Invalid pagination token: {token}")
    return offset


def paginate(
    items: Sequence[T], next_token: str | None, max_results: int | None
) -> tuple[list[T], str | None]:
    """One page of ``items`` and the token of the next page (None on the last page)."""
    start = decode_token(next_token)
    size = max_results or DEFAULT_MAX_RESULTS
    page = list(items[start : start + size])
    more = start + size < len(items)
    return page, encode_token(start + size) if more else None


def sort_items(
    items: list[T],
    sort_by: str | None,
    sort_order: str | None,
    keys: dict[str, Callable[[T], Any]],
    default_sort: str,
) -> list[T]:
    key = keys[sort_by or default_sort]
    return sorted(items, key=key, reverse=(sort_order or "Ascending") == "Descending")


def time_filters(request: dict[str, Any], created: Any, modified: Any) -> bool:
    """Apply CreationTimeAfter/Before and LastModifiedTimeAfter/Before of a List request."""
    checks = (
        ("CreationTimeAfter", created, lambda value, limit: value > limit),
        ("CreationTimeBefore", created, lambda value, limit: value < limit),
        ("LastModifiedTimeAfter", modified, lambda value, limit: value > limit),
        ("LastModifiedTimeBefore", modified, lambda value, limit: value < limit),
    )
    return all(compare(value, request[name]) for name, value, compare in checks if name in request)
