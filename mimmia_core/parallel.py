"""Independent trainings side by side: one call per process on the CPU, each process one thread."""
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import torch


def run_in_processes(fn, calls: list, workers: int = 1, on_done=None) -> list:
    """[fn(*args) for args in calls], in order: in this process when workers <= 1 or there is one call,
    else in min(workers, len(calls)) spawned processes with one CPU thread each. `fn` must be importable
    (a module-level function). on_done(i, result) runs here after call i, in order."""
    results = []
    if workers <= 1 or len(calls) <= 1:
        for i, args in enumerate(calls):
            results.append(fn(*args))
            if on_done is not None:
                on_done(i, results[-1])
        return results
    with ProcessPoolExecutor(min(workers, len(calls)), mp_context=multiprocessing.get_context("spawn"),
                             initializer=torch.set_num_threads, initargs=(1,)) as pool:
        for i, result in enumerate(pool.map(fn, *zip(*calls))):
            results.append(result)
            if on_done is not None:
                on_done(i, result)
    return results


__all__ = ["run_in_processes"]
