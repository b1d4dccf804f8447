"""Ray as the engine (the `ray` extra): one actor per GPU (device cuda) or per CPU slot, each opening its sessions
once (`setup`) and then serving items — a folder of images or a benchmark's photos, each actor taking the next item
as soon as it is done with one (`ray.util.ActorPool`), or the position shards of one large explanation.  What an
actor does is the caller's (cli/explain.py, evaluate/benchmark.py); this module only places it.
"""
from __future__ import annotations

from ..errors import InfolensError


def connect(address: str | None = None):
    """ray.init on `address` ("local" or None: a local cluster on this machine's cores; "auto", "ray://…",
    "host:port": an existing cluster); the ray module."""
    try:
        import ray
    except ImportError:
        raise InfolensError("--ray needs the ray extra: pip install \"infolens[ray]\"", "ray") from None
    if not ray.is_initialized():
        import logging

        try:
            ray.init(address=None if address in (None, "local") else address, include_dashboard=False,
                     log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise InfolensError(f"cannot reach the Ray cluster at {address}: {str(e).splitlines()[0]}", "ray") from None
    return ray


def slots(ray, device: str) -> tuple[int, dict]:
    """How many actors, and the resources each asks for: one per GPU on cuda, else one per CPU (whose sessions then
    use one thread: sessions.use_threads)."""
    resources = ray.cluster_resources()
    if device == "cuda":
        gpus = int(resources.get("GPU", 0))
        if not gpus:
            raise InfolensError("--device cuda with --ray: the Ray cluster has no GPU", "device")
        return gpus, {"num_gpus": 1}
    return max(1, int(resources.get("CPU", 1))), {"num_cpus": 1}


def _threads(resources: dict) -> int | None:
    """ONNX Runtime threads of an actor with these resources: its CPU slots on the CPU, the default on a GPU."""
    return None if "num_gpus" in resources else int(resources.get("num_cpus", 1))


class _Actor:
    """Holds `setup()`'s state (the sessions, opened with the actor's `threads`) and applies `work(state, item)`."""

    def __init__(self, setup, work, threads: int | None = None):
        from ..backends.sessions import use_threads

        use_threads(threads)
        self.state, self.work = setup(), work

    def run(self, item):
        return self.work(self.state, item)


def _actors(ray, setup, work, device: str, most: int) -> list:
    """One actor per slot (at most `most`)."""
    n, resources = slots(ray, device)
    remote = ray.remote(**resources)(_Actor)
    return [remote.remote(setup, work, _threads(resources)) for _ in range(min(n, most))]


def map_items(items: list[dict], setup, work, address: str | None = None, device: str = "cpu") -> list[dict]:
    """work(state, item) → dict for every item, on one actor per slot, each taking the next item as soon as it is
    done with one (so a slow image holds back no other, and every slot stays busy while items are left); results
    in no particular order."""
    from ray.util import ActorPool

    ray = connect(address)
    pool = ActorPool(_actors(ray, setup, work, device, len(items)))
    return list(pool.map_unordered(lambda actor, item: actor.run.remote(item), items))


def run_parts(parts: list, setup, work, address: str | None = None, device: str = "cpu") -> list:
    """work(state, part) for each part on its own actor (one per slot, reused round-robin when there are more
    parts); results in the order of `parts`."""
    ray = connect(address)
    actors = _actors(ray, setup, work, device, len(parts))
    return ray.get([actors[i % len(actors)].run.remote(part) for i, part in enumerate(parts)])
