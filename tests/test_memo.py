import threading

import pytest

from mimmia_core.memo import LRUMemo


def test_least_recently_used_goes_first():
    memo = LRUMemo(2)
    memo.put("a", 1)
    memo.put("b", 2)
    assert memo.get("a") == 1  # a is now the most recent
    memo.put("c", 3)
    assert "b" not in memo and memo.get("a") == 1 and memo.get("c") == 3 and len(memo) == 2
    assert memo.get_or_compute("a", lambda: 99) == 1 and memo.get_or_compute("d", lambda: 4) == 4
    with pytest.raises(ValueError, match="at least one"):
        LRUMemo(0)


def test_a_slow_computation_does_not_block_other_keys():
    memo, started, release = LRUMemo(4), threading.Event(), threading.Event()
    memo.put("cached", 1)

    def slow():
        started.set()
        release.wait(5)
        return 2
    worker = threading.Thread(target=memo.get_or_compute, args=("slow", slow))
    worker.start()
    started.wait(5)
    assert memo.get("cached") == 1  # served while "slow" is computing
    release.set()
    worker.join(5)
    assert memo.get("slow") == 2
