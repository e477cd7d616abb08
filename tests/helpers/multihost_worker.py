"""One process of a multi-process training step (tests/training/test_multihost.py starts two).

    python tests/helpers/multihost_worker.py PROCESS_ID NUM_PROCESSES PORT PRETRAINED OUT_DIR [train]

Initialises `jax.distributed` on localhost with CPU collectives (gloo), builds the
Trainer of the smoke config on the global mesh (one CPU device per process), runs two
training steps on the global batch and writes what it sees (loss, gradient norm, the
second update) to OUT_DIR/process_{id}.npz. With `train`, it then runs the training
command's `train_and_evaluate` for two steps into OUT_DIR/run, as a cluster job would.
"""

import sys

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")

process_id, num_processes, port, pretrained, out_dir = sys.argv[1:6]
jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=int(num_processes),
                           process_id=int(process_id))

import numpy as np  # noqa: E402

from burgers_jax.configs import demo  # noqa: E402
from burgers_jax.model import param_tree  # noqa: E402
from burgers_jax.training import runtime  # noqa: E402
from burgers_jax.training import trainer as train  # noqa: E402

cfg = demo.get_config("smoke")
cfg.model.pretrained_path = pretrained
cfg.model.lora.dropout = 0.0
trainer = train.Trainer(cfg)
assert trainer.mesh.devices.size == int(num_processes) == jax.device_count(), trainer.mesh
state = trainer.initial_state()
state, _ = trainer.train_step(state, trainer.frozen, trainer.shard_batch(trainer.train_batch(0)))
before = runtime.to_host(state.trainable)
state, m = trainer.train_step(state, trainer.frozen, trainer.shard_batch(trainer.train_batch(1)))
after = runtime.to_host(state.trainable)
m = runtime.to_host(m)
flat_before, flat_after = param_tree.flatten(before), param_tree.flatten(after)
np.savez(f"{out_dir}/process_{process_id}.npz", loss=m["loss"], grad_norm=m["grad_norm"],
         **{"/".join(p): flat_after[p] - flat_before[p] for p in flat_before})
if sys.argv[6:] == ["train"]:
    cfg.training.distributed = False  # already initialised above
    train.train_and_evaluate(cfg, f"{out_dir}/run")
print(f"process {process_id}: done")
