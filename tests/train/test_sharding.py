"""The batch really is split over 8 (simulated) devices; params are replicated."""

import os
import subprocess
import sys
import textwrap

from tests.helpers import REPO

SCRIPT = textwrap.dedent("""
    import numpy as np, jax
    from genjax.train import sharding
    mesh = sharding.make_mesh()
    assert jax.device_count() == 8, jax.devices()
    local = {"image": np.zeros((16, 28, 28, 1), np.uint8), "label": np.arange(16, dtype=np.int32)}
    batch = sharding.global_batch(local, mesh)
    shards = batch["label"].addressable_shards
    assert len(shards) == 8 and all(s.data.shape == (2,) for s in shards)
    assert sorted(int(x) for s in shards for x in np.asarray(s.data)) == list(range(16))
    p = jax.device_put(np.ones(3), sharding.replicated(mesh))
    assert all(s.data.shape == (3,) for s in p.addressable_shards)
    try:
      sharding.per_process_batch_size(12)
    except Exception as e:
      assert "divisible by the number of devices (8)" in str(e)
    else:
      raise AssertionError("batch 12 on 8 devices was accepted")
    print("OK")
""")


def test_batch_sharded_over_eight_devices():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr
