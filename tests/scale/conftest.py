"""A real Ray cluster on this machine (2 CPUs) for the whole session, started once (7-14 s
here): the stages find it connected and use it (kfusion.pipeline.data.executor.connect_ray)."""
from __future__ import annotations

import importlib.util

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    if importlib.util.find_spec("ray") is None:   # not importorskip: Ray must first be
        pytest.skip("Ray is the optional extra `ray`: pip install -e '.[dev,ray]' "   # imported
                    "(scripts/setup.sh installs it)")                              # by import_ray
    from kfusion.pipeline.data.executor import import_ray
    ray = import_ray()   # RAY_* set before Ray's first import
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING",
             object_store_memory=100 * 2**20)
    yield ray
    ray.shutdown()
