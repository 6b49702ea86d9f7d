"""The feature cache (trial/_cache.py): training on the cached outputs of the frozen part of
the base is the same training as on the images; caches are shared, keyed, checked, bounded;
where the cache does not apply the trials run uncached and the sweep says so once."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tbxsweep.spec import Spec, load_spec

pytestmark = pytest.mark.slow

METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


def _npz(tmp_path: Path, n: int = 60, size: int = 32, name: str = "data.npz") -> Path:
    """`n` learnable RGB images in 3 classes (a bright channel per class), 3/4 to train."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    x = rng.integers(0, 90, (n, size, size, 3), dtype=np.uint8)
    for c in range(3):
        x[y == c, :, :, c] += 120
    cut = n * 3 // 4
    path = tmp_path / name
    np.savez(path, x_train=x[:cut], y_train=y[:cut], x_val=x[cut:], y_val=y[cut:])
    return path


def _spec(tmp_path: Path, npz: Path, **task: Any) -> Spec:
    raw = {
        "study": {
            "name": "cache",
            "direction": "maximize",
            "metric": "val_accuracy",
            "n_trials": 2,
            "sampler": {"name": "random", "seed": 0},
            "pruner": {"name": "none"},
        },
        "search_space": {"learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2}},
        "task": {
            "dataset": {"npz": str(npz)},
            "base_model": "mobilenet_v2",
            "weights": None,
            "epochs": 2,
            "checkpoint_every_s": 0,
            **task,
        },
        "resources": {"gpus": "none", "n_jobs": 1},
        "output": {"dir": str(tmp_path / "out")},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_spec(path)


def _train(
    spec: Spec,
    run_dir: Path,
    params: dict[str, Any],
    cache_dir: Path | None,
    seed: int = 3,
    depths: tuple[int, ...] = (),
) -> Any:
    """One trial of the built-in task in this process (`depths`: the sweep's); returns
    its context."""
    from tbxsweep.tblog import TrialLogger
    from tbxsweep.trial import TrialContext
    from tbxsweep.trial._finetune import train
    from tbxsweep.trial._tf import configure

    configure(spec.task)
    run_dir.mkdir(parents=True, exist_ok=True)
    logger = TrialLogger(run_dir)
    ctx = TrialContext(
        number=0,
        params=params,
        seed=seed,
        device="cpu",
        run_dir=run_dir,
        logger=logger,
        metric="val_accuracy",
        direction="maximize",
        epochs=spec.task.epochs,
        pruning=None,
        checkpoint_every_s=0.0,
        task=spec.task,
    )
    try:
        train(
            params,
            ctx,
            task=spec.task,
            base_path=None,
            keep_best=True,
            cache_dir=cache_dir,
            cache_depths=depths,
        )
    finally:
        logger.close()
    return ctx


def _curves(ctx: Any) -> list[list[float]]:
    return [[values[k] for k in METRICS] for _, values in ctx.history]


@pytest.fixture
def unmasked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny tests, real sizes: no trial counts as small enough for the masked model (which
    turns the cache off), and each test starts with no compiled or opened models."""
    from tbxsweep.trial import _cache, _finetune

    monkeypatch.setattr(_finetune, "MASK_MAX_WORK", 0)
    _finetune._compiled.clear()
    _finetune._full.clear()
    _cache._opened.clear()


@pytest.mark.parametrize(
    ("base", "unit", "depths", "n_cut"),
    [
        # a Sequential CNN: conv_c cut (below it: conv_b, its BatchNorm, pooling)
        ({"builder": "fake_trials:small_sequential_cnn"}, "layer", (0, 2, 3), None),
        # MobileNetV2 by blocks: one tensor at each block boundary
        ("mobilenet_v2", "block", (0, 3), 1),
        # MobileNetV2 by layers, cut inside block_15 (a residual block): at depth 6 its
        # expansion and the skip from block_14 both cross
        ("mobilenet_v2", "layer", (6,), None),
    ],
)
def test_cached_training_equals_uncached_per_epoch(
    tmp_path: Path, unmasked: None, base: Any, unit: str, depths: tuple[int, ...], n_cut: Any
) -> None:
    from tbxsweep.trial import _cache
    from tbxsweep.trial._base import load_base
    from tbxsweep.trial._data import load_task_data

    spec = _spec(tmp_path, _npz(tmp_path), base_model=base, finetune_unit=unit)
    cache = tmp_path / "out" / "cache"
    data = load_task_data(spec.task)
    model = load_base(spec.task, data).model
    for depth in depths:
        params = {"learning_rate": 0.01, "batch_size": 8, "finetune_depth": depth}
        plain = _train(spec, tmp_path / f"plain-{depth}", params, None)
        cached = _train(spec, tmp_path / f"cached-{depth}", params, cache)
        assert plain.feature_cache is None
        assert cached.feature_cache is True, depth
        assert cached.trainable_params == plain.trainable_params
        assert len(cached.history) == 2
        np.testing.assert_allclose(_curves(cached), _curves(plain), rtol=2e-4, atol=2e-5)
        if n_cut is not None:
            assert len(_cache.cut_tensors(model, depth, unit)) == n_cut
    if unit == "layer" and base == "mobilenet_v2":
        names = [t._keras_history.operation.name for t in _cache.cut_tensors(model, 6, unit)]
        assert sorted(names) == ["block_14_add", "block_15_expand_relu"]


def test_one_full_model_serves_every_cached_depth_of_a_worker(
    tmp_path: Path, unmasked: None
) -> None:
    """A worker's top models on the cache are views of one full model (one clone of the
    base, not one per depth): depth 1's, built after depth 2's had called the layers they
    share (each call adds a node to a layer: the cut is found among the base's own),
    trains as a model of its own does."""
    from tbxsweep.trial import _finetune

    spec = _spec(tmp_path, _npz(tmp_path), base_model="mobilenet_v2", finetune_unit="block")
    cache = tmp_path / "out" / "cache"
    runs = [(2, 8), (0, 8), (1, 4)]
    cached = [
        _train(
            spec,
            tmp_path / f"cached-{i}",
            {"learning_rate": 0.01, "batch_size": b, "finetune_depth": d},
            cache,
        )
        for i, (d, b) in enumerate(runs)
    ]
    assert all(c.feature_cache is True for c in cached)
    entries = list(_finetune._compiled.values())
    assert len(entries) == 3 and len(_finetune._full) == 1
    assert len({id(e.model) for e in entries}) == 1
    assert len({id(e.fitted) for e in entries}) == 3
    _finetune._compiled.clear()
    _finetune._full.clear()
    params = {"learning_rate": 0.01, "batch_size": 4, "finetune_depth": 1}
    alone = _train(spec, tmp_path / "alone", params, cache)
    assert cached[0].trainable_params > alone.trainable_params > cached[1].trainable_params
    assert alone.trainable_params == cached[2].trainable_params
    np.testing.assert_allclose(_curves(cached[2]), _curves(alone), rtol=2e-4, atol=2e-5)


def test_a_wrong_shuffle_order_is_caught(tmp_path: Path, unmasked: None, monkeypatch) -> None:
    """The equality above can fail: shuffled with another seed, the curves differ."""
    from tbxsweep.trial import _cache

    spec = _spec(tmp_path, _npz(tmp_path), base_model="mobilenet_v2", finetune_unit="block")
    params = {"learning_rate": 0.01, "batch_size": 8, "finetune_depth": 1}
    plain = _train(spec, tmp_path / "plain", params, None)
    real = _cache.pipelines
    monkeypatch.setattr(_cache, "pipelines", lambda f, d, b, seed: real(f, d, b, seed + 1))
    cached = _train(spec, tmp_path / "cached", params, tmp_path / "out" / "cache")
    assert cached.feature_cache is True
    assert not np.allclose(_curves(cached), _curves(plain), rtol=2e-4, atol=2e-5)


def _files(cache: Path) -> list[Path]:
    return sorted(cache.glob("features-*/*.npy"))


def test_a_corrupted_or_partial_cache_is_rebuilt_never_trained_on(
    tmp_path: Path, unmasked: None
) -> None:
    from tbxsweep.trial import _cache

    spec = _spec(
        tmp_path, _npz(tmp_path), base_model={"builder": "fake_trials:small_sequential_cnn"}
    )
    cache = tmp_path / "out" / "cache"
    params = {"learning_rate": 0.01, "batch_size": 8, "finetune_depth": 1}
    first = _train(spec, tmp_path / "first", params, cache)
    assert first.feature_cache is True and first.cache_build_s > 0
    (folder,) = cache.glob("features-*/")
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "train-0.npy", "val-0.npy"]
    # changed bytes, same size: only the digest can tell
    train_file = folder / "train-0.npy"
    raw = bytearray(train_file.read_bytes())
    raw[-4:] = b"\x00\x00\xc0\x7f"  # a NaN in the last feature
    train_file.write_bytes(bytes(raw))
    _cache._opened.clear()  # as a new worker process: it checks the files it opens
    again = _train(spec, tmp_path / "again", params, cache)
    assert again.feature_cache is True and again.cache_build_s > 0  # rebuilt
    np.testing.assert_allclose(_curves(again), _curves(first), rtol=2e-4, atol=2e-5)
    assert train_file.read_bytes() != bytes(raw)
    # a partial file (a build that died mid-write, an interrupted copy)
    (folder / "val-0.npy").write_bytes((folder / "val-0.npy").read_bytes()[:100])
    _cache._opened.clear()
    third = _train(spec, tmp_path / "third", params, cache)
    assert third.feature_cache is True and third.cache_build_s > 0
    np.testing.assert_allclose(_curves(third), _curves(first), rtol=2e-4, atol=2e-5)
    # whole and checked: used as it is
    _cache._opened.clear()
    fourth = _train(spec, tmp_path / "fourth", params, cache)
    assert fourth.feature_cache is True and fourth.cache_build_s == 0


def test_one_build_computes_the_cuts_of_every_swept_depth_in_one_pass(
    tmp_path: Path, unmasked: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first trial's build writes the cuts of the sweep's other depths too (one pass
    through the frozen layers); later depths train on them without building; the features
    are the ones a build of that cut alone computes."""
    from tbxsweep.trial import _cache

    builder = {"builder": "fake_trials:small_sequential_cnn"}
    spec = _spec(tmp_path, _npz(tmp_path), base_model=builder)
    cache = tmp_path / "out" / "cache"
    builds: list[list[int]] = []
    real = _cache._start

    def counted(plan: list[Any], *args: Any) -> Any:
        builds.append([c.depth for c in plan])
        return real(plan, *args)

    monkeypatch.setattr(_cache, "_start", counted)

    def train(depth: int, where: Path, depths: tuple[int, ...]) -> Any:
        params = {"learning_rate": 0.01, "batch_size": 8, "finetune_depth": depth}
        into = where.parent / "cache" if where.parent.name == "alone" else cache
        return _train(spec, where, params, into, depths=depths)

    first = train(1, tmp_path / "d1", (0, 1, 2))
    assert builds == [[1, 0, 2]]  # the asked cut first, then the others smallest first
    assert first.cache_build_s > 0
    metas = [json.loads(p.read_text()) for p in cache.glob("features-*/meta.json")]
    assert sorted(m["depth"] for m in metas) == [0, 1, 2]
    for depth in (0, 2):
        later = train(depth, tmp_path / f"d{depth}", (0, 1, 2))
        assert later.feature_cache is True and later.cache_build_s == 0
        plain = _train(spec, tmp_path / f"plain-{depth}", later.params, None)
        np.testing.assert_allclose(_curves(later), _curves(plain), rtol=2e-4, atol=2e-5)
    assert builds == [[1, 0, 2]]
    # the depth-2 cut computed alone (another cache) holds the same features
    _cache._opened.clear()
    train(2, tmp_path / "alone" / "d2", ())
    assert builds[-1] == [2]
    by_depth = {
        json.loads(p.read_text())["depth"]: p.parent for p in cache.glob("features-*/meta.json")
    }
    (alone,) = (tmp_path / "alone" / "cache").glob("features-*/")
    assert alone.name == by_depth[2].name  # the same key
    for f in ("train-0.npy", "val-0.npy"):
        np.testing.assert_allclose(
            np.load(alone / f), np.load(by_depth[2] / f), rtol=1e-5, atol=1e-6
        )


def test_a_build_adds_other_depths_only_within_the_budget(tmp_path: Path, unmasked: None) -> None:
    builder = {"builder": "fake_trials:small_sequential_cnn"}
    # per sample: depth 0 and 1 16 floats each, depth 2 14 x 14 x 8 (376 KB for 60 samples)
    spec = _spec(tmp_path, _npz(tmp_path), base_model=builder, feature_cache_mb=0.3)
    cache = tmp_path / "out" / "cache"
    params = {"learning_rate": 0.01, "batch_size": 8, "finetune_depth": 0}
    ctx = _train(spec, tmp_path / "d0", params, cache, depths=(0, 1, 2))
    assert ctx.feature_cache is True
    metas = [json.loads(p.read_text()) for p in cache.glob("features-*/meta.json")]
    assert sorted(m["depth"] for m in metas) == [0, 1]  # depth 2 is over 0.3 MB
    used = sum(f.stat().st_size for f in cache.glob("features-*/*.npy"))
    assert used <= 0.3 * 2**20


def _build_parts(tmp_path: Path) -> tuple[Spec, Any, Any, Path]:
    from tbxsweep.trial._base import load_base
    from tbxsweep.trial._data import load_task_data
    from tbxsweep.trial._tf import configure

    builder = {"builder": "fake_trials:small_sequential_cnn"}
    spec = _spec(tmp_path, _npz(tmp_path), base_model=builder)
    configure(spec.task)
    data = load_task_data(spec.task)
    return spec, data, load_base(spec.task, data), tmp_path / "out" / "cache"


def _started(spec: Spec, data: Any, base: Any, cache: Path, depth: int) -> Path:
    """A build of the cuts of depths 0-2, planned and created as a worker does."""
    from tbxsweep.trial import _cache

    cache.mkdir(parents=True, exist_ok=True)
    cut = _cache.cut_tensors(base.model, depth, "layer")
    wanted = _cache._Cut(depth, cut, _cache.feature_key(data, base, cut))
    plan = _cache._plan(spec.task, data, base, wanted, (0, 1, 2), cache)
    return _cache._start(plan, data, base, "layer", cache)


def _fresh(tmp_path: Path, spec: Spec, data: Any, base: Any, depth: int) -> Path:
    """The cut at `depth` built alone into another cache."""
    from tbxsweep.trial import _cache

    _cache._opened.clear()
    found, _ = _cache.features_for(spec.task, data, base, depth, tmp_path / "fresh", ())
    assert found is not None
    (folder,) = (tmp_path / "fresh").glob(f"features-{found.key}/")
    return folder


def _same_files(a: Path, b: Path) -> None:
    assert sorted(p.name for p in a.glob("*.npy")) == sorted(p.name for p in b.glob("*.npy"))
    for f in a.glob("*.npy"):
        np.testing.assert_allclose(np.load(f), np.load(b / f.name), rtol=1e-5, atol=1e-6)


def test_a_build_left_half_done_by_a_killed_worker_is_finished_by_the_next(
    tmp_path: Path, unmasked: None
) -> None:
    """A worker killed mid-build leaves its build folder with some chunks done: the next
    process that needs one of its cuts computes only the missing chunks and finishes it;
    a build folder killed before its plan was written is removed."""
    from tbxsweep.trial import _cache

    spec, data, base, cache = _build_parts(tmp_path)
    folder = _started(spec, data, base, cache, 1)
    doc = json.loads((folder / "plan.json").read_text())
    assert [c["depth"] for c in doc["cuts"]] == [1, 0, 2]
    assert doc["chunks"] == [["train", 0, 45], ["val", 0, 15]]
    _cache._Pass(folder, data, base, "layer", cache).compute(0)  # then the worker dies
    (folder / "chunk-0.done").write_text("4242")  # as that worker's pid
    dead = cache / f".features-x.1{_cache.BUILD_SUFFIX}"
    (dead / "x").mkdir(parents=True)  # died before its plan.json
    found, seconds = _cache.features_for(spec.task, data, base, 0, cache, (0, 1, 2))
    assert found is not None and seconds > 0
    assert not dead.exists() and not folder.exists()
    metas = {
        json.loads(p.read_text())["depth"]: p.parent for p in cache.glob("features-*/meta.json")
    }
    assert sorted(metas) == [0, 1, 2]
    import os

    built_by = json.loads((metas[0] / "meta.json").read_text())["built_by"]
    assert built_by == sorted([4242, os.getpid()])
    for depth in (0, 1, 2):
        _same_files(metas[depth], _fresh(tmp_path / f"f{depth}", spec, data, base, depth))


def test_a_pass_traces_the_frozen_layers_once_for_chunks_of_any_size(
    tmp_path: Path, unmasked: None
) -> None:
    """Chunks differ in rows (45 and 15 here, as a last chunk and a last batch do): one
    trace serves them all (a second trace of MobileNetV2 costs about a second)."""
    from tbxsweep.trial import _cache

    spec, data, base, cache = _build_parts(tmp_path)
    work = _cache._Pass(_started(spec, data, base, cache, 1), data, base, "layer", cache)
    assert [stop - start for _, start, stop in work.chunks] == [45, 15]
    work.compute(0)
    work.compute(1)
    assert work.fn.experimental_get_tracing_count() == 1


def test_a_worker_that_asks_during_a_build_computes_the_chunks_nobody_holds(
    tmp_path: Path, unmasked: None
) -> None:
    """While another process holds a chunk, a joining worker computes the others, then
    waits for that one instead of computing it twice."""
    import fcntl
    import os
    import threading

    from tbxsweep.trial import _cache

    spec, data, base, cache = _build_parts(tmp_path)
    folder = _started(spec, data, base, cache, 2)
    peer = open(folder / "chunk-0.lock", "a+")  # noqa: SIM115 (held across the thread)
    fcntl.flock(peer.fileno(), fcntl.LOCK_EX)  # the first worker computes chunk 0
    result: list[Any] = []
    joiner = threading.Thread(
        target=lambda: result.append(
            _cache.features_for(spec.task, data, base, 1, cache, (0, 1, 2))
        )
    )
    joiner.start()
    deadline = time.monotonic() + 60
    while not (folder / "chunk-1.done").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (folder / "chunk-1.done").read_text() == str(os.getpid())
    assert joiner.is_alive()  # waiting for chunk 0, not computing it
    _cache._Pass(folder, data, base, "layer", cache).compute(0)
    (folder / "chunk-0.done").write_text("4242")  # the peer's pid
    fcntl.flock(peer.fileno(), fcntl.LOCK_UN)
    peer.close()
    joiner.join(60)
    (found, seconds) = result[0]
    assert found is not None and seconds > 0
    metas = {
        json.loads(p.read_text())["depth"]: p.parent for p in cache.glob("features-*/meta.json")
    }
    assert json.loads((metas[1] / "meta.json").read_text())["built_by"] == sorted(
        [4242, os.getpid()]
    )
    _same_files(metas[1], _fresh(tmp_path, spec, data, base, 1))


def test_the_key_changes_with_the_base_and_the_data(tmp_path: Path) -> None:
    from tbxsweep.trial import _cache
    from tbxsweep.trial._base import load_base
    from tbxsweep.trial._data import load_task_data
    from tbxsweep.trial._tf import configure

    def key(spec: Spec, depth: int = 1) -> str:
        configure(spec.task)
        data = load_task_data(spec.task)
        base = load_base(spec.task, data)
        cut = _cache.cut_tensors(base.model, depth, "layer")
        return _cache.feature_key(data, base, cut)

    builder = {"builder": "fake_trials:small_sequential_cnn"}
    npz = _npz(tmp_path)
    same = key(_spec(tmp_path, npz, base_model=builder))
    assert key(_spec(tmp_path, npz, base_model=builder, epochs=5)) == same  # not the key's
    assert key(_spec(tmp_path, npz, base_model=builder), depth=2) != same  # another cut
    assert key(_spec(tmp_path, npz, base_model=builder, seed=1)) != same  # other weights
    other = _npz(tmp_path, n=64, name="other.npz")  # other images
    assert key(_spec(tmp_path, other, base_model=builder)) != same
    bigger = key(_spec(tmp_path, npz, base_model=builder, input_shape=[36, 36, 3]))
    assert bigger != same  # resized otherwise
    # not the names Keras generates: a worker that built other models first (its layers
    # auto-named input_layer_7, sequential_3) computes the same key
    import keras

    from tbxsweep.trial import _base

    _base._cache.clear()
    _cache._prefixes.clear()
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert key(_spec(tmp_path, npz, base_model=builder)) == same


def test_over_the_budget_trials_run_uncached(tmp_path: Path, unmasked: None) -> None:
    builder = {"builder": "fake_trials:small_sequential_cnn"}
    # 45 + 15 samples x 8 x 14 x 14 floats at depth 2: 376 KB
    spec = _spec(tmp_path, _npz(tmp_path), base_model=builder, feature_cache_mb=0.3)
    cache = tmp_path / "out" / "cache"
    big = _train(spec, tmp_path / "big", {"finetune_depth": 2, "batch_size": 8}, cache)
    assert big.feature_cache is False and big.cache_build_s == 0
    small = _train(spec, tmp_path / "small", {"finetune_depth": 0, "batch_size": 8}, cache)
    assert small.feature_cache is True  # 60 x 16 floats: within it
    assert len(list(cache.glob("features-*/meta.json"))) == 1


def test_where_it_does_not_apply_trials_run_uncached_and_the_notice_says_why(
    tmp_path: Path, unmasked: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tbxsweep.trial import _cache, _finetune, static_task_info
    from tbxsweep.trial._base import load_base
    from tbxsweep.trial._data import load_task_data

    def notice(spec: Spec) -> str:
        data = load_task_data(spec.task)
        return _cache.notice(spec.task, data, load_base(spec.task, data))

    npz = _npz(tmp_path)
    cache = tmp_path / "out" / "cache"
    params = {"finetune_depth": 1, "batch_size": 8}
    cases = {
        "off": (
            _spec(tmp_path, npz, feature_cache=False),
            "feature cache: off (task.feature_cache is false)",
        ),
        "tf.data": (
            _spec(tmp_path, npz, dataset={"loader": "fake_trials:tf_data_batches"}),
            "feature cache: off (the dataset's loader returns tf.data pipelines (their "
            "batches are its own))",
        ),
        "random": (
            _spec(tmp_path, npz, base_model={"builder": "fake_trials:noisy_sequential_cnn"}),
            "feature cache: off (random layers below the cut (noise))",
        ),
    }
    for name, (spec, line) in cases.items():
        assert notice(spec) == line, name
        ctx = _train(spec, tmp_path / name, params, cache)
        assert ctx.feature_cache is False, name
        assert len(ctx.history) == 2
    assert not cache.exists() or not list(cache.glob("features-*/"))
    on = _spec(tmp_path, npz, finetune_unit="block")
    assert notice(on) == (
        "feature cache: on for finetune_depth 0-18 (frozen features computed once, in "
        "cache/, at most 4096 MB); not for 19 (nothing frozen at the full depth)"
    )
    # the ones the orchestrator knows from the spec alone
    custom = _spec(tmp_path, npz, train="fake_trials:train")
    assert static_task_info(custom).feature_cache == ""  # no line: it trains its own model
    pretrain = load_spec(Path(__file__).parents[2] / "sweeps" / "lr.yaml")
    assert static_task_info(pretrain).feature_cache == (
        "feature cache: off (not for base_model 'pretrain')"
    )
    monkeypatch.setattr(_finetune, "MASK_MAX_WORK", 5e8)  # as shipped: 45 images are tiny
    assert notice(on) == (
        "feature cache: off (the trials are small (base weights x training samples x "
        "epochs): one masked model per worker trains every depth faster)"
    )


def test_a_sweep_of_two_workers_builds_each_cut_once_and_shows_it(tmp_path: Path) -> None:
    """Real loky workers, real storage: the depth's cache is built by one trial of one
    worker, the other trials train on it; leaderboard, sweep run and progress say so."""
    import io

    import pandas as pd
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tbxsweep.cli.progress import Progress
    from tbxsweep.schedule import run_sweep

    # 120 training images: 2.3 M base weights x 120 x 2 epochs is past MASK_MAX_WORK
    npz = _npz(tmp_path, n=160)
    spec = _spec(tmp_path, npz, finetune_unit="block")
    raw = spec.model_dump(mode="json", exclude_unset=True)
    raw["study"]["n_trials"] = 4
    raw["resources"]["n_jobs"] = 2
    raw["search_space"] = {
        "learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2},
        "finetune_depth": {"type": "categorical", "choices": [2]},
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    stream = io.StringIO()
    run_sweep(load_spec(path), on_event=Progress("val_accuracy", stream, live=False))
    out = tmp_path / "out"
    lines = stream.getvalue().splitlines()
    assert lines[1] == (
        "feature cache: on for finetune_depth 0-18 (frozen features computed once, in "
        "cache/, at most 4096 MB); not for 19 (nothing frozen at the full depth)"
    )
    shares = [line for line in lines if "built the feature cache in" in line]
    assert sum("feature cache" in line for line in lines) == 1 + len(shares)
    df = pd.read_csv(out / "leaderboard.csv")
    assert list(df.columns) == [
        "rank", "trial", "state", "value", "test_accuracy", "test_loss", "learning_rate",
        "finetune_depth", "best_epoch",
        "epochs_run", "trainable_params", "feature_cache", "cache_build_s", "duration_s",
        "device", "worker_pid", "run", "model", "error",
    ]  # fmt: skip
    assert list(df["state"]) == ["complete"] * 4
    assert list(df["feature_cache"]) == [True] * 4
    assert df["worker_pid"].nunique() == 2
    # one build; a worker that asked while it ran computed its share of the rows or
    # waited for them: a trial line says so for each trial that spent time on it
    assert 1 <= (df["cache_build_s"] > 0).sum() == len(shares) <= 2
    (folder,) = (out / "cache").glob("features-*/")
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["depth"] == 2
    assert 1 <= len(meta["built_by"]) <= 2
    assert set(meta["built_by"]) <= set(df["worker_pid"])
    assert not list((out / "cache").glob(".features-*"))  # no build left behind
    acc = EventAccumulator(str(out / "sweep"))
    acc.Reload()
    built = [e.value for e in acc.Scalars("sweep/cache_build_s")]
    assert built[-1] == pytest.approx(df["cache_build_s"].sum(), abs=2e-3)


def test_with_a_head_phase_the_cached_fine_tuning_equals_the_uncached(
    tmp_path: Path, unmasked: None
) -> None:
    """`task.head_epochs`: the head first trains alone on images, then the fine-tuning
    phase on the cache sees the same example order as on images (the shuffle has already
    drawn the head phase's epochs)."""
    builder = {"builder": "fake_trials:small_sequential_cnn"}
    spec = _spec(tmp_path, _npz(tmp_path), base_model=builder, head_epochs=2)
    params = {"learning_rate": 0.01, "batch_size": 8, "finetune_depth": 2}
    plain = _train(spec, tmp_path / "plain", params, None)
    cached = _train(spec, tmp_path / "cached", params, tmp_path / "out" / "cache")
    assert cached.feature_cache is True
    np.testing.assert_allclose(_curves(cached), _curves(plain), rtol=2e-4, atol=2e-5)


def test_a_shallower_cut_is_derived_from_a_deeper_one_already_cached(
    tmp_path: Path, unmasked: None
) -> None:
    """Depth 2's cut cached first; depth 1's is then computed from it (only the frozen
    layers between the cuts run) and holds the features a build from the images gives;
    the base stays cacheable (the pass, a model built from its inner tensors, adds a node
    to each layer it calls: counted as "called twice", they turned the cache off for that
    worker)."""
    from tbxsweep.trial import _cache

    spec, data, base, cache = _build_parts(tmp_path)
    deep, _ = _cache.features_for(spec.task, data, base, 2, cache, ())
    assert deep is not None
    started: list[Any] = []
    real = _cache._start

    def record(plan: list[Any], *args: Any) -> Any:
        folder = real(plan, *args)
        started.append(json.loads((folder / "plan.json").read_text()))
        return folder

    _cache._start = record  # type: ignore[assignment]
    try:
        shallow, seconds = _cache.features_for(spec.task, data, base, 1, cache, ())
    finally:
        _cache._start = real  # type: ignore[assignment]
    assert shallow is not None and seconds > 0
    assert [s["source"] for s in started] == [{"depth": 2, "key": deep.key}]
    # the worker's base is left as it was: its later trials still train on the cache
    assert _cache.why_off(spec.task, data, base) is None
    metas = {
        json.loads(p.read_text())["depth"]: p.parent for p in cache.glob("features-*/meta.json")
    }
    _same_files(metas[1], _fresh(tmp_path, spec, data, base, 1))
