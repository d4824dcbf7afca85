"""A bounded, thread-safe least-recently-used memo: one for the Scorer's arrays and the dashboard's results."""
import threading
from collections import OrderedDict


class LRUMemo:
    """key -> value, at most `size` entries; the lock covers the memo only, never the computation."""

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"a memo needs room for at least one entry, got size {size}")
        self.size = size
        self._items = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, default=None):
        with self._lock:
            if key not in self._items:
                return default
            self._items.move_to_end(key)
            return self._items[key]

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._items

    def put(self, key, value):
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def get_or_compute(self, key, compute):
        """The memoised value, or compute() (outside the lock: other keys are served meanwhile) stored."""
        missing = object()
        value = self.get(key, missing)
        return self.put(key, compute()) if value is missing else value

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


__all__ = ["LRUMemo"]
