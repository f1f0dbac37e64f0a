"""`training.strategy: fsdp`: FSDP2 through accelerate's FSDP plugin, turned on by `accelerate launch` flags.

`accelerate launch --use_fsdp` exports the plugin's settings (`ACCELERATE_USE_FSDP`, `FSDP_VERSION`,
`FSDP_AUTO_WRAP_POLICY`, `FSDP_STATE_DICT_TYPE`, ...); the Trainer's `Accelerator` builds its
`FullyShardedDataParallelPlugin` from them, shards the model with `fully_shard` and saves and resumes checkpoints
through the plugin.
"""

from __future__ import annotations

LAUNCH_FLAGS = [
    "--use_fsdp",
    "--fsdp_version",
    "2",
    "--fsdp_auto_wrap_policy",
    "TRANSFORMER_BASED_WRAP",  # one FSDP unit per decoder layer (the model's `_no_split_modules`)
    "--fsdp_reshard_after_forward",
    "true",  # free each layer's gathered weights after its forward: memory is why FSDP was chosen
    "--fsdp_state_dict_type",
    "FULL_STATE_DICT",  # checkpoints hold the adapter gathered on rank 0 (small), readable without FSDP
    "--fsdp_cpu_ram_efficient_loading",
    "false",  # its default (true) loads on rank 0 only, which needs the process group up before the model loads
]


def enable_on_cpu() -> None:
    """Let accelerate's FSDP plugin take effect on CPU (gloo).

    accelerate sets its state to FSDP only for accelerator devices; on CPU it keeps MULTI_CPU and drops the plugin,
    so the Trainer would train with DDP under a config that asks for FSDP. torch's FSDP2 runs on CPU with gloo, so
    after accelerate's own setup this makes the state what its GPU branch makes it: FSDP, with the plugin. Call it
    in the rank's process before the Trainer is built."""
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    init = AcceleratorState.__init__

    def init_with_fsdp(self, *args, fsdp_plugin=None, **kwargs):
        init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin or FullyShardedDataParallelPlugin()

    AcceleratorState.__init__ = init_with_fsdp
