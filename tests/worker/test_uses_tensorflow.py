"""Which `task.train` functions get TensorFlow imported in their workers' warm-up: those
whose code imports it, found by reading the source (the module is not run for it)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import TESTS

from tbxsweep.worker._entry import uses_tensorflow


def _write(root: Path, files: dict[str, str]) -> None:
    for name, body in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body))


@pytest.mark.parametrize(
    ("files", "ref", "expected"),
    [
        # at the module's top
        ({"ut_top.py": "import tensorflow as tf\ndef train(p, c): ...\n"}, "ut_top:train", True),
        # inside the function, as training code often does
        ({"ut_body.py": "def train(p, c):\n    import keras\n"}, "ut_body:train", True),
        # inside a helper the function calls (benchmarks/bench_task.py: train -> fit_digits)
        (
            {
                "ut_helper.py": "def fit():\n    from keras import layers\ndef train(p, c):\n"
                "    return fit()\n"
            },
            "ut_helper:train",
            True,
        ),
        # a package re-exporting the function from a module of its own (examples/custom_train)
        (
            {
                "ut_pkg/__init__.py": "from ut_pkg.run import train\n",
                "ut_pkg/run.py": "def train(p, c):\n    import tensorflow\n",
            },
            "ut_pkg:train",
            True,
        ),
        (
            {
                "ut_rel/__init__.py": "from .run import train as fit\n",
                "ut_rel/run.py": "def train(p, c):\n    import keras\n",
            },
            "ut_rel:fit",
            True,
        ),
        # another function of the module uses Keras; this one does not (tests/fake_trials.py)
        (
            {"ut_other.py": "def base():\n    import keras\ndef train(p, c):\n    return 1.0\n"},
            "ut_other:train",
            False,
        ),
        ({"ut_torch.py": "import torch\ndef train(p, c): ...\n"}, "ut_torch:train", False),
        # modules importing each other's names do not loop
        (
            {
                "ut_a.py": "from ut_b import f\ndef g():\n    return f()\n",
                "ut_b.py": "from ut_a import g as f\n",
            },
            "ut_a:g",
            False,
        ),
        ({}, "ut_missing:train", False),
    ],
)
def test_what_counts_as_using_tensorflow(tmp_path, monkeypatch, files, ref, expected) -> None:
    _write(tmp_path, files)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert uses_tensorflow(ref) is expected


_WARM_UP = """
import sys
from tbxsweep.jobs import PrepareJob, SlotPlan
from tbxsweep.spec import load_spec
from tbxsweep.worker import warm_up
warm_up(PrepareJob(load_spec(sys.argv[1], ["task.train=" + sys.argv[2]]), "",
                   SlotPlan("", ("",), 1)))
print("tensorflow" in sys.modules, sys.argv[2].partition(":")[0] in sys.modules)
"""


def test_a_function_without_tensorflow_gets_its_module_and_no_tensorflow(make_spec) -> None:
    # the other way round (TensorFlow imported too): tests/schedule/test_startup.py
    proc = subprocess.run(
        [sys.executable, "-c", _WARM_UP, str(make_spec()), "fake_trials:train"],
        env={**os.environ, "PYTHONPATH": str(TESTS)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False True"
