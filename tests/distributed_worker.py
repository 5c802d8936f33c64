"""Run by tests/test_distributed.py under `torch.distributed.run` with 2 CPU processes (gloo).

Each rank takes its half of a fixed batch, computes the model's own loss with gathering across ranks
turned on (as both trainers do) and back-propagates through DDP; rank 0 saves the loss and the
(all-reduced) gradients.
"""

import sys

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs

from e2_hf import E2CLIPModel
from e2_hf.training import enable_cross_rank_loss
from tests.test_distributed import fixed_batch, tiny_model


def main(variant: str, output_path: str) -> None:
    # In eval mode the argmax selection gives the fusion blocks' q/k no gradient: DDP must be told
    # (as the trainer always does), or the buckets holding them are never all-reduced.
    accelerator = Accelerator(cpu=True, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    rank, world = accelerator.process_index, accelerator.num_processes
    model = tiny_model(variant)
    batch = fixed_batch()
    local = {key: value.chunk(world)[rank] for key, value in batch.items()}
    model = accelerator.prepare(model)
    unwrapped: E2CLIPModel = accelerator.unwrap_model(model)
    enable_cross_rank_loss(unwrapped)
    outputs = model(**local, return_loss=True)
    accelerator.backward(outputs.loss)
    if accelerator.is_main_process:
        grads = {name: parameter.grad for name, parameter in unwrapped.named_parameters()}
        torch.save({"loss": outputs.loss.detach(), "region_loss": outputs.region_loss.detach(), "grads": grads},
                   output_path)  # fmt: skip
    accelerator.wait_for_everyone()
    accelerator.end_training()  # the process group is torn down in order before the processes exit


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
