"""Push the trainer's weights to the student's generator(s), so the next round samples the new policy.

With LoRA only the adapter tensors travel (~20 MB for SmolLM2 with r=16 on every linear layer,
instead of 540 MB). Tensors travel packed: each dtype's bytes are copied into a few large uint8
numpy buckets plus an index. Ray moves numpy buffers through its object store without pickling
them and reads them zero-copy on the other side, which is ~7x faster here than pickling a torch
state_dict tensor by tensor (bench/weight_sync.py). The generator stamps every later completion
with the returned version, which is how stale lessons are found.

When the trainer and the generator share a node, the bytes skip the object store: the trainer
writes them into one shared-memory segment it keeps for the whole run and sends only its name
(`SharedWeights`), the CPU counterpart of the CUDA IPC handles verl and OpenRLHF pass between
colocated actors. The object store allocates fresh memory for every put, and first-touch page
faults made it the slowest step of a sync on this CPU; the segment's pages stay warm. One sync is
in flight at a time (`sync_weights` awaits it), which is what makes reusing the segment safe.
"""

from __future__ import annotations

import asyncio
import math
import mmap
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

BUCKET_BYTES = 256 * 2**20
ALONE_BYTES = 2**20
SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "tutorloop-weights-"


@dataclass(frozen=True, slots=True)
class PackedWeights:
    buckets: tuple[Any, ...]
    """uint8 numpy arrays holding the raw bytes of the tensors, in index order."""
    index: tuple[tuple[str, str, tuple[int, ...], int, int], ...]
    """(name, torch dtype name, shape, bucket number, byte offset) per tensor; one dtype per bucket."""

    @property
    def nbytes(self) -> int:
        return sum(int(b.nbytes) for b in self.buckets)


@dataclass(frozen=True, slots=True)
class SharedWeights:
    """Where packed weights lie in a same-node shared-memory segment: a name, not the bytes."""
    path: str
    """The segment's file under /dev/shm."""
    spans: tuple[tuple[int, int], ...]
    """(byte offset, byte length) of each bucket inside the segment."""
    index: tuple[tuple[str, str, tuple[int, ...], int, int], ...]
    """As `PackedWeights.index`."""

    @property
    def nbytes(self) -> int:
        return sum(length for _, length in self.spans)


def pack(named_tensors: Iterable[tuple[str, Any]], bucket_bytes: int = BUCKET_BYTES,
         reuse: PackedWeights | None = None) -> PackedWeights:
    """Consecutive tensors of one dtype are flattened into one bucket with a single `torch.cat`
    (hundreds of LoRA tensors cost one copy, not hundreds); a new bucket starts at a dtype change
    or past `bucket_bytes`. Buckets are raw bytes, because bf16 has no numpy dtype. `reuse`: the
    previous sync's buckets, written in place when the layout is unchanged; fresh memory costs
    more in page faults than the copy itself (24 ms for a 20 MB adapter on this CPU)."""
    import torch

    index, groups = _groups(named_tensors, bucket_bytes, alone_bytes=ALONE_BYTES)
    if reuse is not None and reuse.index == tuple(index) and all(len(g) > 1 for g in groups):
        for g, bucket in zip(groups, reuse.buckets):
            torch.cat([t.reshape(-1).cpu() for t in g], out=torch.from_numpy(bucket).view(g[0].dtype))
        return reuse
    flat = [torch.cat([t.reshape(-1) for t in g]) if len(g) > 1 else g[0].reshape(-1) for g in groups]
    return PackedWeights(buckets=tuple(f.cpu().contiguous().view(torch.uint8).numpy() for f in flat),
                         index=tuple(index))


def _groups(named_tensors: Iterable[tuple[str, Any]], bucket_bytes: int,
            alone_bytes: float = math.inf) -> tuple[list[Any], list[list[Any]]]:
    """(index, tensors per bucket): one dtype per bucket, at most `bucket_bytes`; a tensor of at least
    `alone_bytes` gets a bucket of its own (`pack` sends those as zero-copy views of themselves)."""
    index, groups, current, size = [], [], [], 0
    for name, t in named_tensors:
        t = t.detach()
        nbytes = t.numel() * t.element_size()
        if current and (t.dtype != current[0].dtype or size + nbytes > bucket_bytes or nbytes >= alone_bytes
                        or current[0].numel() * current[0].element_size() >= alone_bytes):
            groups.append(current)
            current, size = [], 0
        index.append((name, str(t.dtype).removeprefix("torch."), tuple(t.shape), len(groups), size))
        current.append(t)
        size += nbytes
    if current:
        groups.append(current)
    return index, groups


class SharedSegment:
    """The trainer's side of the same-node path: one /dev/shm segment, rewritten in place each sync
    and recreated only when the tensors' layout changes. Removed when the trainer goes away; a
    segment left by a killed process is removed by the next trainer that starts on the node."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.shared: SharedWeights | None = None
        self.buckets: list[Any] = []

    def write(self, named_tensors: Iterable[tuple[str, Any]], bucket_bytes: int = BUCKET_BYTES) -> SharedWeights | None:
        """The tensors copied into the segment, or None when /dev/shm lacks the room (then the
        caller sends `PackedWeights` through the object store)."""
        import torch

        index, groups = _groups(named_tensors, bucket_bytes)
        if self.shared is None or self.shared.index != tuple(index):
            if not self._allocate(index, groups):
                return None
        for group, bucket in zip(groups, self.buckets):
            torch.cat([t.reshape(-1).cpu() for t in group], out=bucket.view(group[0].dtype))
        return self.shared

    def _allocate(self, index: list[Any], groups: list[list[Any]]) -> bool:
        import numpy as np
        import torch

        sizes = [sum(t.numel() * t.element_size() for t in g) for g in groups]
        offsets = np.cumsum([0] + [-(-n // 64) * 64 for n in sizes[:-1]]).tolist()  # aligned for any dtype view
        total = max(offsets[-1] + sizes[-1], 1)
        self.close()
        _remove_orphans()
        if not SHM_DIR.is_dir() or _free_bytes(SHM_DIR) < 2 * total + 2**20:  # leave Ray its share
            return False
        self.path = SHM_DIR / f"{SHM_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        with open(self.path, "w+b") as f:
            f.truncate(total)
            self._map = mmap.mmap(f.fileno(), total)
        whole = torch.frombuffer(self._map, dtype=torch.uint8)
        self.buckets = [whole[o:o + n] for o, n in zip(offsets, sizes)]
        self.shared = SharedWeights(path=str(self.path), spans=tuple(zip(offsets, sizes)), index=tuple(index))
        return True

    def close(self) -> None:
        self.buckets, self.shared = [], None
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None

    def __del__(self) -> None:
        self.close()


def _free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def _remove_orphans() -> None:
    """Segments whose writer died (SIGKILL skips every cleanup) would hold memory until reboot."""
    for seg in SHM_DIR.glob(f"{SHM_PREFIX}*") if SHM_DIR.is_dir() else ():
        try:
            os.kill(int(seg.name.removeprefix(SHM_PREFIX).split("-")[0]), 0)
        except ProcessLookupError:
            seg.unlink(missing_ok=True)
        except (ValueError, PermissionError):
            pass


_READ_MAPS: dict[str, Any] = {}


def open_shared(shared: SharedWeights) -> PackedWeights:
    """The reader's side: `PackedWeights` whose buckets view the writer's segment (no copy). The
    mapping is kept per segment: mapping 20 MB afresh costs page faults on every sync."""
    import numpy as np

    if shared.path not in _READ_MAPS:
        for old in list(_READ_MAPS):
            del _READ_MAPS[old]  # the writer made a new segment: its layout changed
        try:
            with open(shared.path, "rb") as f:
                _READ_MAPS[shared.path] = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        except FileNotFoundError:
            raise RuntimeError(f"weights segment {shared.path} is gone: the trainer is not on this node "
                               "or has restarted") from None
    whole = np.frombuffer(_READ_MAPS[shared.path], dtype=np.uint8)
    return PackedWeights(buckets=tuple(whole[o:o + n] for o, n in shared.spans), index=shared.index)


def unpack(packed: PackedWeights) -> list[tuple[str, Any]]:
    """Tensors that view the buckets (no copy); the receiver copies them into its parameters."""
    import warnings

    import torch

    warnings.filterwarnings("ignore", message="The given buffer is not writable")  # Ray hands out read-only views
    by_bucket: dict[int, list[tuple[str, Any, tuple[int, ...]]]] = {}
    for name, dtype, shape, bucket, _ in packed.index:
        by_bucket.setdefault(bucket, []).append((name, getattr(torch, dtype), shape))
    out = []
    for bucket, entries in sorted(by_bucket.items()):
        raw = packed.buckets[bucket]
        data = (torch.from_numpy(raw) if raw.flags.writeable else torch.frombuffer(raw, dtype=torch.uint8)) \
            if raw.size else torch.empty(0, dtype=torch.uint8)
        pieces = torch.split(data.view(entries[0][1]), [math.prod(shape) for _, _, shape in entries])
        out += [(name, piece.view(shape)) for (name, _, shape), piece in zip(entries, pieces)]
    return out


def as_named_tensors(weights: PackedWeights | SharedWeights | Iterable[tuple[str, Any]]) -> list[tuple[str, Any]]:
    if isinstance(weights, SharedWeights):
        weights = open_shared(weights)
    return unpack(weights) if isinstance(weights, PackedWeights) else list(weights)


def copy_into(targets: dict[str, Any], weights: Any, layout: dict[str, Any]) -> None:
    """Copy synced weights into the receiver's tensors `targets` (by name). With `layout` (a dict the
    receiver keeps; pass it only when `targets` are parameters nothing else aliases, as LoRA's are),
    the first sync re-points the targets into one flat tensor per bucket, in the sender's order, so
    every later sync is one copy per bucket instead of hundreds of small ones."""
    import torch

    if isinstance(weights, SharedWeights):
        weights = open_shared(weights)
    named = as_named_tensors(weights)
    if missing := [name for name, _ in named if name not in targets]:
        raise ValueError(f"weights not in the receiver's model: {missing[:3]}")
    with torch.no_grad():
        flats = _flat_targets(targets, weights, layout) if isinstance(weights, PackedWeights) else None
        if flats is None:  # one fused call instead of hundreds of small copies
            torch._foreach_copy_([targets[name] for name, _ in named], [tensor for _, tensor in named])
            return
        for (dtype, flat), raw in zip(flats, weights.buckets):
            source = torch.from_numpy(raw) if raw.flags.writeable else torch.frombuffer(raw, dtype=torch.uint8)
            flat.copy_(source.view(dtype))


def _flat_targets(targets: dict[str, Any], packed: PackedWeights, layout: dict[str, Any] | None) -> Any:
    """[(sender dtype, flat receiver tensor)] per bucket, made on first use for this index; None
    when the layout cannot be flattened (no `layout` dict, mixed receiver dtypes in a bucket)."""
    import torch

    if layout is None:
        return None
    if layout.get("index") != packed.index:
        by_bucket: dict[int, list[tuple[str, str]]] = {}
        for name, dtype, _, bucket, _ in packed.index:
            by_bucket.setdefault(bucket, []).append((name, dtype))
        entries = [by_bucket.get(b, []) for b in range(len(packed.buckets))]
        if any(not e or len({targets[n].dtype for n, _ in e}) > 1 for e in entries):
            return None
        flats = []
        for entry in entries:
            params = [targets[name] for name, _ in entry]
            flat = torch.cat([p.detach().reshape(-1) for p in params])
            for p, piece in zip(params, torch.split(flat, [p.numel() for p in params])):
                p.data = piece.view(p.shape)
            flats.append((getattr(torch, entry[0][1]), flat))
        layout.update(index=packed.index, flats=flats)
    return layout["flats"]


async def sync_weights(trainer: Any, generator: Any) -> int:
    """Returns the version the generator now samples. In this process the update is awaited and
    handed over; on Ray it stays an object ref that the generator actor resolves itself, so the
    bytes go from the trainer's node to the generator's without a detour through the driver."""
    colocated = getattr(trainer, "colocated_with", None)  # a Ray proxy: are both on one node?
    shared = bool(colocated) and await colocated(generator)
    update = trainer.weights(shared=True) if shared else trainer.weights()
    if asyncio.iscoroutine(update):
        update = await update
    return await generator.load_weights(update)
