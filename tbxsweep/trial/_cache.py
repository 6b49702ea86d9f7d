"""The feature cache: what the frozen part of the base computes, computed once per sweep.

At fine-tune depth d the base below its top d units is frozen and called with
`training=False` (BatchNorm in inference mode, dropout off), on the same images every
epoch: its outputs are a fixed function of the data. A trial of the built-in task at depth
d therefore trains, instead of the whole model on images, a *top model* (the base's top d
units and the head) on those outputs, read from files that every trial and worker of the
sweep shares.

The cut. For depth d, the frozen part is every layer of the base before the first layer of
its top d units (in the base's topological layer order, the order `finetune_units` counts
in). The cut is the set of tensors that frozen layers produce and unfrozen layers (or the
base's output) consume: one tensor at most unit boundaries, several where a skip connection
crosses it (MobileNetV2 cut inside a residual block: the block's input and its expansion).
The top model is built from the trial's own copy of the base, `keras.Model(cut, output)`,
so it shares its layers, hence its weights, with the full model: what the top model
trains, the full model holds. Checkpoints, `best.weights.h5` and anything saved of the
model are the full model's, with the trained weights in it.

The same training. The cached pipeline shuffles example *indices* with the same
`Dataset.shuffle(n, seed, reshuffle_each_iteration=True)` as `make_pipeline` (the order it
draws depends on the seeds and n, not on what the elements hold), batches them the same
way and gathers the cached rows: the same examples in the same batches every epoch, the
same optimizer and metrics. Features are computed in batches of BUILD_BATCH, not the
trial's: the results agree to float rounding (the tests compare per-epoch metrics).

Sharing. A cut's features depend on the data, the base (architecture and weights, the
resize and preprocessing) and the cut, not on learning rate or batch size. They live in
`<output.dir>/cache/features-<key>/` (one `.npy` per cut tensor and split, and `meta.json`
with their shapes and digests, written last), keyed by a hash of all of that. A build
is planned under an exclusive `fcntl` lock on `features-<data and base>.lock`: besides the
cut its trial asked for, it computes the cuts of the sweep's other fine-tune depths
(`spec.swept_depths`) not cached yet, smallest first as far as the budget allows, in one
pass: one multi-output model from the images (or from the nearest deeper cut already
cached, running only the frozen units in between) to every tensor of those cuts, so the
frozen layers run once per sweep, not once per depth. The build lives in a hidden folder
(`.features-<key>.<pid>.build.tmp/`: its plan, preallocated `.npy` files, one lock and one
`.done` marker per chunk of BUILD_BATCH rows). Every worker that needs one of its cuts
computes the chunks no other process holds (workers that start together share the work),
then waits for the rest, and computes a chunk whose process died; the last one digests
the files, writes each cut's `meta.json` (with the pids that built it) and renames each
cut's folder into place (atomic). A build left by a killed sweep is finished by the
next process that asks. A directory whose files do not match its `meta.json`
(missing, truncated, changed bytes) is removed and built again, never trained on; each
process checks a cache once, when it first opens it. Files are opened with
`mmap_mode="r"`: workers share the pages. Images are resized and preprocessed as
`make_pipeline` does. `task.feature_cache_mb` bounds the total size of a sweep's feature
files: a cut that would go over it is not built, and its trials run uncached.

When it does not apply (the trials run uncached; the sweep's first lines say so once, in
the line `notice` returns): `task.feature_cache: false`; a custom `task.train`; datasets
given as tf.data pipelines by a loader (their batches and order are the loader's); a base
the sweep pretrains itself (`base_model: pretrain`: a small CNN) or any trial small enough
for the worker's one masked model (`_finetune.MASK_MAX_WORK`): there tracing a top model per
depth costs more than the frozen layers do; mixed precision; a base that nests models or
calls a layer twice (its cut cannot be rebuilt as a graph); and, per depth, random layers
below the cut (augmentation, noise, dropout: per-epoch randomness that a cache would fix)
and the full depth (nothing frozen). The built-in task always calls the base with
`training=False`; a base called in training mode would not be frozen, and none is.

Per-worker reuse: a worker keeps a compiled top model per cached depth (`_finetune._Compiled`
with a cut), so each depth is traced once per worker, as uncached depths are; all of them
are views of one full model per worker (one clone of the base). Building a top model
calls the layers above its cut, which adds nodes to them: `cut_tensors` and `why_off` look
only at the nodes of the base's own graph (`_own_nodes`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tbxsweep.trial import backbones

if TYPE_CHECKING:
    from tbxsweep.spec import TaskSpec
    from tbxsweep.trial._base import Base
    from tbxsweep.trial._data import TaskData

FORMAT = 1  # bump when the files or what they hold change: old caches are then not found
BUILD_BATCH = 256
PREFIX = "features-"
META = "meta.json"

_opened: dict[str, Features] = {}  # caches this process has checked, by key
_prefixes: dict[tuple[int, ...], str] = {}  # (ids of the data arrays, base model) -> hash


class Uncacheable(Exception):
    """This cut cannot be cached; the message says why, for the notice line."""


@dataclass(frozen=True)
class Features:
    """A cut's cached outputs: one read-only (memory-mapped) array per cut tensor."""

    key: str
    train: tuple[np.ndarray, ...]
    val: tuple[np.ndarray, ...]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (*self.train, *self.val))


# --- when it applies -----------------------------------------------------------------------


def why_off(task: TaskSpec, data: TaskData | None = None, base: Base | None = None) -> str | None:
    """Why no trial of this task trains on the cache (one clause), or None where it may.

    Without `data` and `base` only what the spec says is looked at.
    """
    if not task.feature_cache:
        return "task.feature_cache is false"
    if task.train is not None:
        return "a custom task.train trains its own model"
    if task.base_kind == "pretrain":
        # The digits CNN's trials are far below MASK_MAX_WORK (one masked model per worker
        # trains every depth faster); the classic CNN's on CIFAR are not, but are not cached
        # yet either.
        return "not for base_model 'pretrain'"
    if task.mixed_precision:
        return "not under task.mixed_precision"
    if data is not None and data.datasets is not None:
        return "the dataset's loader returns tf.data pipelines (their batches are its own)"
    if data is not None and base is not None:
        from tbxsweep.trial._finetune import small_enough_to_mask

        if small_enough_to_mask(base, data, task):
            return (
                "the trials are small (base weights x training samples x epochs): one "
                "masked model per worker trains every depth faster"
            )
        import keras

        nested = [x.name for x in base.model.layers if isinstance(x, keras.Model)]
        if nested:
            return f"the base nests the model {nested[0]!r}: its cuts cannot be rebuilt"
        own = _own_nodes(base.model)
        twice = [
            x.name for x in base.model.layers if sum(id(n) in own for n in x._inbound_nodes) > 1
        ]
        if twice:
            return f"the base calls the layer {twice[0]!r} twice: its cuts cannot be rebuilt"
    return None


def cached_depths(task: TaskSpec, base: Base) -> dict[int, str | None]:
    """For each depth 0..max: None where the cache applies, else why it does not."""
    out: dict[int, str | None] = {}
    for depth in range(backbones.max_depth(base.model, task.finetune_unit) + 1):
        try:
            cut_tensors(base.model, depth, task.finetune_unit)
            out[depth] = None
        except Uncacheable as exc:
            out[depth] = str(exc)
    return out


def notice(task: TaskSpec, data: TaskData | None = None, base: Base | None = None) -> str:
    """The sweep's one line about the cache: on for which depths, or off and why."""
    off = why_off(task, data, base)
    if off is not None:
        return f"feature cache: off ({off})"
    if base is None:
        return "feature cache: on where it applies"
    by_depth = cached_depths(task, base)
    on = [d for d, why in by_depth.items() if why is None]
    if not on:
        first = next(iter(by_depth.values()))
        return f"feature cache: off ({first})"
    others = sorted({why for why in by_depth.values() if why is not None})
    rest = [d for d, why in by_depth.items() if why is not None]
    tail = f"; not for {_ranges(rest)} ({'; '.join(others)})" if rest else ""
    return (
        f"feature cache: on for finetune_depth {_ranges(on)} (frozen features computed once, "
        f"in cache/, at most {task.feature_cache_mb:g} MB){tail}"
    )


def _ranges(depths: list[int]) -> str:
    parts: list[str] = []
    start = prev = depths[0]
    for d in [*depths[1:], None]:
        if d is not None and d == prev + 1:
            prev = d
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if d is not None:
            start = prev = d
    return ", ".join(parts)


# --- the cut -------------------------------------------------------------------------------


def cut_tensors(model: Any, depth: int, unit: str) -> list[Any]:
    """The tensors of `model`'s graph that cross from its frozen part (at `depth`) into
    the part that trains or into its output, in layer order.

    Raises:
        Uncacheable: nothing frozen, random layers below the cut, or a graph whose cut
            cannot be rebuilt (nested models, layers called twice).
    """
    import keras

    layers = list(model.layers)
    if any(isinstance(x, keras.Model) for x in layers):
        raise Uncacheable("the base nests models")
    top = backbones.top_unit_layers(model, depth, unit)
    k = next((i for i, x in enumerate(layers) if x.name in top), len(layers))
    frozen = layers[:k]
    if not any(backbones.can_train(x) for x in frozen):
        raise Uncacheable("nothing frozen at the full depth")
    random = [x.name for x in frozen if _is_random(x)]
    if random:
        raise Uncacheable(f"random layers below the cut ({', '.join(random[:3])})")
    frozen_ids = {id(x) for x in frozen}
    own = _own_nodes(model)
    cut: list[Any] = []

    def take(t: Any) -> None:
        history = getattr(t, "_keras_history", None)
        op = history.operation if history is not None else None
        is_frozen = op is not None and (id(op) in frozen_ids or type(op).__name__ == "InputLayer")
        if is_frozen and all(t is not c for c in cut):
            cut.append(t)

    for layer in layers[k:]:
        nodes = [n for n in layer._inbound_nodes if id(n) in own]
        if len(nodes) != 1:
            raise Uncacheable(f"the layer {layer.name!r} is called more than once")
        for t in nodes[0].input_tensors:
            take(t)
    for t in model.outputs:
        take(t)
    if not cut:
        raise Uncacheable("no tensor crosses the cut")
    return cut


def _own_nodes(model: Any) -> set[int]:
    """The ids of the nodes of `model`'s own graph. A Keras model built from inner tensors
    of the base (a derived build's pass, a worker's top models) calls the layers it runs
    again, adding nodes to them that are not the base's: "called twice" counts these only."""
    graph = getattr(model, "_functional", model)  # a Sequential keeps its graph there
    return {id(n) for nodes in graph._nodes_by_depth.values() for n in nodes}


def _is_random(layer: Any) -> bool:
    """Layers that draw random numbers (dropout, noise, augmentation) hold a seed generator."""
    import keras

    return any(isinstance(v, keras.random.SeedGenerator) for v in vars(layer).values()) or type(
        layer
    ).__name__.startswith("Random")


def _one(tensors: list[Any]) -> Any:
    return tensors[0] if len(tensors) == 1 else tensors


def top_model(model: Any, copy: Any, depth: int, unit: str) -> Any:
    """The part of the fine-tuning `model` (built by `build_model`, `copy` its base) above
    the cut at `depth`: cut tensors in, class probabilities out. It shares `model`'s
    layers and weights."""
    import keras

    cut = cut_tensors(copy, depth, unit)
    inputs = [
        keras.Input(tuple(t.shape[1:]), dtype=t.dtype, name=f"cut_{i}") for i, t in enumerate(cut)
    ]
    if [id(t) for t in cut] == [id(t) for t in copy.outputs]:
        x = _one(inputs)  # the cut is the base's output (depth 0): nothing of it trains
    else:
        upper = keras.Model(_one(cut), _one(list(copy.outputs)), name="base_top")
        x = upper(_one(inputs), training=False)
    # The head and pooling that build_model put after the base, called on the new tensor.
    features = copy._inbound_nodes[-1].outputs[0]
    head = keras.Model(features, model.outputs[0], name="head_part")
    return keras.Model(_one(inputs), head(x), name="finetune_cached")


# --- keys and files ------------------------------------------------------------------------


def feature_key(data: TaskData, base: Base, cut: list[Any]) -> str:
    """The cache key of a cut: the data, the base (architecture, weights, input size,
    preprocessing) and the tensors of the cut."""
    h = hashlib.blake2b(_prefix(data, base).encode(), digest_size=12)
    layers = [id(x) for x in base.model.layers]
    for t in cut:
        op, node, index = t._keras_history
        # the layer's place, not its name: auto-generated names depend on what the
        # process built before (a reused worker names its Input "input_layer_7")
        at = layers.index(id(op)) if id(op) in layers else op.name
        h.update(f"|{at}:{node}:{index}:{tuple(t.shape)}:{t.dtype}".encode())
    return h.hexdigest()


def _prefix(data: TaskData, base: Base) -> str:
    assert data.arrays is not None
    ident = (*(id(a) for a in data.arrays), id(base.model))
    if ident not in _prefixes:
        import keras

        h = hashlib.blake2b(digest_size=16)
        h.update(f"format {FORMAT} keras {keras.__version__}".encode())
        for a in data.arrays:
            h.update(f"{a.shape}{a.dtype}".encode())
            h.update(np.ascontiguousarray(a).data)
        config = json.dumps(base.model.get_config(), sort_keys=True, default=str)
        # Names Keras generates count the models this process built before: each layer
        # name (and the model's) becomes its place, so every worker computes one key.
        for i, name in sorted(enumerate(_names(base.model.get_config())), key=lambda n: -len(n[1])):
            config = config.replace(json.dumps(name), f'"#{i}"')
        h.update(config.encode())
        for w in base.model.weights:
            h.update(np.ascontiguousarray(np.asarray(w)).data)
        pre = getattr(base.preprocess, "__qualname__", repr(base.preprocess))
        h.update(f"{base.input_shape}{data.image_shape}{pre}".encode())
        _prefixes[ident] = h.hexdigest()
    return _prefixes[ident]


def _names(config: Any) -> list[str]:
    """Every `name` in a model's config (the model's, its layers', its input layers'), in
    order of first appearance."""
    out: list[str] = []

    def walk(o: Any) -> None:
        if isinstance(o, dict):
            if isinstance(o.get("name"), str) and o["name"] not in out:
                out.append(o["name"])
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(config)
    return out


def cache_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / f"{PREFIX}{key}"


def features_for(
    task: TaskSpec,
    data: TaskData,
    base: Base,
    depth: int,
    cache_dir: Path,
    depths: Sequence[int] = (),
) -> tuple[Features | None, float]:
    """The cached features of the cut at `depth`, built if they are not there yet;
    (None, seconds) where the cache does not apply or the budget would be exceeded.

    `depths` are the sweep's other fine-tune depths: a build computes their cuts in the
    same pass (one forward pass through the frozen base serves every cut above its
    deepest one), as far as the budget allows, so the sweep pays for the frozen layers
    once, not once per depth. Workers that need a cut while it is being built compute
    their share of its rows (chunks of BUILD_BATCH) instead of waiting.

    Returns:
        (features or None, seconds this call spent building caches)
    """
    if why_off(task, data, base) is not None:
        return None, 0.0
    unit = task.finetune_unit
    try:
        cut = cut_tensors(base.model, depth, unit)
    except Uncacheable:
        return None, 0.0
    key = feature_key(data, base, cut)
    if key in _opened:
        return _opened[key], 0.0
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Planning and finishing take this lock (short); the rows are computed outside it.
    group = cache_dir / f"{PREFIX}{_prefix(data, base)[:24]}.lock"
    built = 0.0
    for _ in range(3):  # a build that another process finished or lost is looked up again
        with _locked(group):
            found = _open(cache_path(cache_dir, key), key)
            if found is not None:
                _opened[key] = found
                return found, built
            build = _joinable(cache_dir, key)
            if build is None:
                plan = _plan(task, data, base, _Cut(depth, cut, key), depths, cache_dir)
                if not plan:
                    return None, built
                build = _start(plan, data, base, unit, cache_dir)
        t0 = time.perf_counter()
        _work(build, data, base, unit, cache_dir)
        with _locked(group):
            _finish(build, cache_dir)
        built += time.perf_counter() - t0
    return None, built  # built and at once unreadable: the disk, not the cache


@dataclass(frozen=True)
class _Cut:
    depth: int
    tensors: list[Any]
    key: str


def _plan(
    task: TaskSpec, data: TaskData, base: Base, wanted: _Cut, depths: Sequence[int], root: Path
) -> list[_Cut]:
    """The cuts one build computes: `wanted` first (none if it is over the budget), then
    the other depths' cuts not cached yet, smallest first, while they fit the budget."""
    assert data.arrays is not None
    n = len(data.arrays.y_train) + len(data.arrays.y_val)

    def size(cut: list[Any]) -> int:
        return n * sum(int(np.prod(t.shape[1:])) * 4 for t in cut)

    left = task.feature_cache_mb * 2**20 - _used_bytes(root) - size(wanted.tensors)
    if left < 0:
        return []
    plan, keys = [wanted], {wanted.key}
    others: list[tuple[int, _Cut]] = []
    for d in sorted(set(depths) - {wanted.depth}):
        try:
            cut = cut_tensors(base.model, d, task.finetune_unit)
        except Uncacheable:
            continue
        key = feature_key(data, base, cut)
        if key in keys or key in _opened or (cache_path(root, key) / META).is_file():
            continue  # the same cut as another depth's, or built (checked when opened)
        keys.add(key)
        others.append((size(cut), _Cut(d, cut, key)))
    for nbytes, c in sorted(others, key=lambda sc: sc[0]):
        if nbytes <= left:
            plan.append(c)
            left -= nbytes
    return plan


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _used_bytes(cache_dir: Path) -> int:
    """Bytes of the cached cuts and of the builds in progress (preallocated)."""
    done = [f for d in cache_dir.glob(f"{PREFIX}*") if d.is_dir() for f in d.iterdir()]
    building = list(cache_dir.glob(f".{PREFIX}*{BUILD_SUFFIX}/*/*.npy"))
    return sum(f.stat().st_size for f in [*done, *building] if f.is_file())


def _digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _open(folder: Path, key: str) -> Features | None:
    """The cache in `folder` if it is whole; a broken one is removed (and None)."""
    if not folder.is_dir():
        return None
    try:
        meta = json.loads((folder / META).read_text())
        if meta.get("format") != FORMAT or meta.get("key") != key:
            raise ValueError("another format or key")
        arrays: dict[str, list[np.ndarray]] = {"train": [], "val": []}
        for entry in meta["files"]:
            path = folder / entry["name"]
            if _digest(path) != entry["digest"]:
                raise ValueError(f"{entry['name']} does not match its digest")
            a = np.load(path, mmap_mode="r", allow_pickle=False)
            if list(a.shape) != entry["shape"] or str(a.dtype) != entry["dtype"]:
                raise ValueError(f"{entry['name']} has another shape or dtype")
            arrays[entry["split"]].append(a)
    except (OSError, ValueError, KeyError, TypeError):
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return Features(key, tuple(arrays["train"]), tuple(arrays["val"]))


# A build in progress: `.features-<first key>.<pid>.build.tmp/` holds `plan.json` (the
# cuts, their source, the chunks of rows), one folder per cut with its preallocated `.npy`
# files, and per chunk a lock file (held while a process computes it) and a `.done` marker.
BUILD_SUFFIX = ".build.tmp"


def _build_dirs(root: Path) -> list[Path]:
    return sorted(root.glob(f".{PREFIX}*{BUILD_SUFFIX}"))


def _joinable(root: Path, key: str) -> Path | None:
    """A build in progress (or left by a killed process) that computes `key`.

    Called under the group lock, which every build is created under: a build folder
    without its plan is one whose creator died before finishing it, and is removed.
    """
    found = None
    for folder in _build_dirs(root):
        try:
            plan = json.loads((folder / "plan.json").read_text())
        except (OSError, ValueError):
            shutil.rmtree(folder, ignore_errors=True)
            continue
        if found is None and key in [c["key"] for c in plan["cuts"]]:
            found = folder
    return found


def _start(plan: list[_Cut], data: TaskData, base: Base, unit: str, root: Path) -> Path:
    """Create the build folder of `plan`: preallocated files, chunks, plan.json last."""
    assert data.arrays is not None
    source = _deeper_source(data, base, max(c.depth for c in plan), unit, root)
    counts = {"train": len(data.arrays.y_train), "val": len(data.arrays.y_val)}
    folder = root / f".{PREFIX}{plan[0].key}.{os.getpid()}{BUILD_SUFFIX}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for c in plan:
        (folder / c.key).mkdir()
        for split, n in counts.items():
            for i, t in enumerate(c.tensors):
                np.lib.format.open_memmap(
                    folder / c.key / f"{split}-{i}.npy",
                    mode="w+",
                    dtype=np.float32,
                    shape=(n, *(int(d) for d in t.shape[1:])),
                ).flush()
    chunks = [
        [split, at, min(at + BUILD_BATCH, n)]
        for split, n in counts.items()
        for at in range(0, n, BUILD_BATCH)
    ]
    doc = {
        "cuts": [{"depth": c.depth, "key": c.key} for c in plan],
        "source": None if source is None else {"depth": source[0], "key": source[1].key},
        "chunks": chunks,
    }
    (folder / "plan.json").write_text(json.dumps(doc))
    return folder


class _Pass:
    """One process's way of computing a build's rows: the multi-output model from the
    source (images, or a deeper cached cut) to every tensor of the build's cuts."""

    def __init__(self, folder: Path, data: TaskData, base: Base, unit: str, root: Path) -> None:
        import keras
        import tensorflow as tf

        doc = json.loads((folder / "plan.json").read_text())
        self.folder, self.data, self.base = folder, data, base
        self.chunks: list[tuple[str, int, int]] = [tuple(c) for c in doc["chunks"]]
        self.source: Features | None = None
        source_depth = None
        if doc["source"] is not None:
            source_depth, key = doc["source"]["depth"], doc["source"]["key"]
            if _key_at(data, base, source_depth, unit) != key:
                raise ValueError("the build's source cut is not this base's")
            self.source = _opened.get(key) or _open(cache_path(root, key), key)
            if self.source is None:
                raise ValueError("the build's source cut is gone")
        self.cuts: list[tuple[str, list[Any]]] = []
        self.wanted: list[Any] = []  # every tensor once; a skip tensor can be in two cuts
        for c in doc["cuts"]:
            tensors = cut_tensors(base.model, c["depth"], unit)
            if feature_key(data, base, tensors) != c["key"]:
                raise ValueError("the build was planned for another base or data")
            self.cuts.append((c["key"], tensors))
            self.wanted += [t for t in tensors if all(t is not w for w in self.wanted)]
        # From a deeper cut, a model of the base's inner tensors: it adds nodes to the
        # layers it runs (see `_own_nodes`).
        if source_depth is not None:
            model = keras.Model(_one(cut_tensors(base.model, source_depth, unit)), self.wanted)
        else:
            model = keras.Model(base.model.inputs[0], self.wanted)
        # Any number of rows: a chunk's last batch (and a last chunk) is smaller, and a
        # second trace of the base would cost a second.
        specs = [tf.TensorSpec((None, *t.shape[1:]), t.dtype) for t in model.inputs]
        self.fn = tf.function(lambda x: model(x, training=False), input_signature=[_one(specs)])

    def batches(self, split: str, start: int, stop: int) -> Iterator[Any]:
        if self.source is not None:
            arrays = self.source.train if split == "train" else self.source.val
            part = [np.asarray(a[start:stop]) for a in arrays]
            yield part[0] if len(part) == 1 else part
            return
        from tbxsweep.trial.datasets import make_pipeline

        a = self.data.arrays
        assert a is not None
        xs, ys = (a.x_train, a.y_train) if split == "train" else (a.x_val, a.y_val)
        pipe = make_pipeline(
            xs[start:stop],
            ys[start:stop],
            BUILD_BATCH,
            preprocess=self.base.preprocess,
            image_size=self.base.input_shape[:2],
        )
        for x, _ in pipe:
            yield x

    def compute(self, index: int) -> None:
        """Compute chunk `index`'s rows of every cut into the build's files."""
        split, start, stop = self.chunks[index]
        outs = [
            (
                np.load(self.folder / key / f"{split}-{i}.npy", mmap_mode="r+"),
                next(j for j, w in enumerate(self.wanted) if w is t),
            )
            for key, tensors in self.cuts
            for i, t in enumerate(tensors)
        ]
        at = start
        for batch in self.batches(split, start, stop):
            result = self.fn(batch)  # a one-output model returns its tensor, not a list
            got = [
                np.asarray(g) for g in (result if isinstance(result, list | tuple) else [result])
            ]
            n = len(got[0])
            for out, j in outs:
                out[at : at + n] = got[j]
            at += n
        for out, _ in outs:
            out.flush()
        (self.folder / f"chunk-{index}.done").write_text(str(os.getpid()))


def _key_at(data: TaskData, base: Base, depth: int, unit: str) -> str | None:
    try:
        return feature_key(data, base, cut_tensors(base.model, depth, unit))
    except Uncacheable:
        return None


def _work(folder: Path, data: TaskData, base: Base, unit: str, root: Path) -> None:
    """Compute the chunks of the build in `folder` that no other process is computing,
    then wait for the others' (and compute any whose process died)."""
    try:
        work = _Pass(folder, data, base, unit, root)
    except (OSError, ValueError, KeyError, TypeError):  # TypeError: a plan of another shape
        shutil.rmtree(folder, ignore_errors=True)  # unusable: planned again
        return
    for blocking in (False, True):
        for index in range(len(work.chunks)):
            if (folder / f"chunk-{index}.done").exists():
                continue
            try:
                if not _claim(folder, index, work, blocking):
                    continue  # another process computes it
            except FileNotFoundError:
                return  # every chunk done: the build was finished and removed meanwhile


def _claim(folder: Path, index: int, work: _Pass, blocking: bool) -> bool:
    """Compute chunk `index` under its lock unless another process holds it (without
    `blocking`) or it is done; False when another process holds it."""
    with open(folder / f"chunk-{index}.lock", "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        if not (folder / f"chunk-{index}.done").exists():
            work.compute(index)
    return True


def _finish(folder: Path, root: Path) -> None:
    """Under the group lock: once every chunk is done, digest and describe each cut's
    files and rename its folder into place; then remove the build folder."""
    try:
        doc = json.loads((folder / "plan.json").read_text())
    except (OSError, ValueError):
        return  # finished by another process
    done = [folder / f"chunk-{i}.done" for i in range(len(doc["chunks"]))]
    if not all(p.exists() for p in done):
        return  # a process died mid-chunk: the next one to ask computes it
    builders = sorted({int(p.read_text() or 0) for p in done})
    for c in doc["cuts"]:
        files = []
        for f in sorted((folder / c["key"]).glob("*.npy")):
            shape = np.load(f, mmap_mode="r").shape
            split, i = f.stem.split("-")
            files.append(
                {
                    "name": f.name,
                    "split": split,
                    "index": int(i),
                    "shape": [int(d) for d in shape],
                    "dtype": "float32",
                    "digest": _digest(f),
                }
            )
        files.sort(key=lambda e: (e["split"] != "train", e["index"]))
        meta = {
            "format": FORMAT,
            "key": c["key"],
            "depth": c["depth"],
            "files": files,
            "built_by": builders,
        }
        (folder / c["key"] / META).write_text(json.dumps(meta, indent=1))
        final = cache_path(root, c["key"])
        shutil.rmtree(final, ignore_errors=True)
        os.replace(folder / c["key"], final)
    shutil.rmtree(folder, ignore_errors=True)


def _deeper_source(
    data: TaskData, base: Base, depth: int, unit: str, root: Path
) -> tuple[int, Features] | None:
    """(its depth, its features): the nearest deeper cut (lower in the base) already
    cached, to start from; checked once here (kept in `_opened` for the pass)."""
    for deeper in range(depth + 1, backbones.max_depth(base.model, unit) + 1):
        try:
            cut = cut_tensors(base.model, deeper, unit)
        except Uncacheable:
            continue
        key = feature_key(data, base, cut)
        found = _opened.get(key) or _open(cache_path(root, key), key)
        if found is not None:
            _opened[key] = found
            return deeper, found
    return None


# --- the trial's pipelines -----------------------------------------------------------------


def pipelines(features: Features, data: TaskData, batch_size: int, seed: int) -> tuple[Any, Any]:
    """(train, validation) tf.data pipelines over the cached features, batched and
    shuffled exactly as `_finetune.pipelines` batches and shuffles the images."""
    assert data.arrays is not None
    a = data.arrays
    train = _indexed(features.train, a.y_train, batch_size, seed)
    val = _indexed(features.val, a.y_val, max(batch_size, 256), None)
    return train, val


def _indexed(
    arrays: tuple[np.ndarray, ...], y: np.ndarray, batch_size: int, seed: int | None
) -> Any:
    import tensorflow as tf

    n = len(y)
    labels = tf.constant(y)
    ds = tf.data.Dataset.range(n)
    if seed is not None:  # as make_pipeline: the whole set, reshuffled every epoch
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    shapes = [tuple(a.shape[1:]) for a in arrays]

    def gather(idx: Any) -> list[np.ndarray]:
        return [np.asarray(a[idx]) for a in arrays]

    def load(idx: Any) -> Any:
        parts = tf.numpy_function(gather, [idx], [tf.float32] * len(arrays))
        for p, s in zip(parts, shapes, strict=True):
            p.set_shape((None, *s))
        x = parts[0] if len(parts) == 1 else tuple(parts)
        return x, tf.gather(labels, idx)

    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
