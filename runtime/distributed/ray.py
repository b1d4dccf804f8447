"""Ray as the engine (the `ray` extra): one actor per GPU (device cuda) or per CPU slot, each opening its sessions
once (`setup`) and then serving items — a folder of images through Ray Data's `map_batches`, or the position
shards of one large explanation.  What an actor does is the caller's (cli/explain.py); this module only places it.
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
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # infolens prints one line per image instead
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    return ray


def slots(ray, device: str) -> tuple[int, dict]:
    """How many actors, and the resources each asks for: one per GPU on cuda, else one per CPU."""
    resources = ray.cluster_resources()
    if device == "cuda":
        gpus = int(resources.get("GPU", 0))
        if not gpus:
            raise InfolensError("--device cuda with --ray: the Ray cluster has no GPU", "device")
        return gpus, {"num_gpus": 1}
    return max(1, int(resources.get("CPU", 1))), {"num_cpus": 1}


class _Actor:
    """Holds `setup()`'s state (the sessions) and applies `work(state, item)` to each item of a batch."""

    def __init__(self, setup, work):
        self.state, self.work = setup(), work

    def __call__(self, batch: dict) -> dict:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        results = [self.work(self.state, row) for row in rows]
        return {key: [r[key] for r in results] for key in results[0]} if results else {}


def map_items(items: list[dict], setup, work, address: str | None = None, device: str = "cpu") -> list[dict]:
    """work(state, item) → dict for every item, on Ray Data `map_batches` with one actor per slot (a batch is one
    item, so a slow image does not hold back others); results in no particular order."""
    ray = connect(address)
    n, resources = slots(ray, device)
    ds = ray.data.from_items(items).map_batches(_Actor, fn_constructor_args=(setup, work), batch_size=1,
                                                concurrency=min(n, len(items)), batch_format="numpy", **resources)
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in ds.iter_rows()]


def run_parts(parts: list, setup, work, address: str | None = None, device: str = "cpu") -> list:
    """work(state, part) for each part on its own actor (one per slot, reused round-robin when there are more
    parts); results in the order of `parts`."""
    ray = connect(address)
    n, resources = slots(ray, device)
    remote = ray.remote(**resources)(_PartActor)
    actors = [remote.remote(setup, work) for _ in range(min(n, len(parts)))]
    return ray.get([actors[i % len(actors)].run.remote(part) for i, part in enumerate(parts)])


class _PartActor:
    def __init__(self, setup, work):
        self.state, self.work = setup(), work

    def run(self, part):
        return self.work(self.state, part)
