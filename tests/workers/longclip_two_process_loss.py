"""torchrun worker: the Long-CLIP loss and gradients with 2 processes (gloo, CPU), for test_training.py.

Each process builds the same tiny model, takes its half of a fixed global batch, runs `forward` (which gathers the
features across processes itself), backpropagates, and averages gradients like DDP. Rank 0 saves loss and gradients.
"""

import sys

import torch
import torch.distributed as dist


def global_batch(size: int):
    generator = torch.Generator().manual_seed(123)
    ids = torch.randint(1, 49000, (size, 12), generator=generator)
    ids[:, 0], ids[:, -1] = 49406, 49407
    short = ids[:, :6].clone()
    short[:, -1] = 49407
    pixels = torch.randn(size, 3, 32, 32, generator=generator)
    return ids, short, pixels


def main():
    sys.path.insert(0, sys.argv[2])  # tests/, for the conftest helpers
    from conftest import tiny_longclip_config

    from modeling_longclip import LongCLIPModel

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = LongCLIPModel(tiny_longclip_config(pca_components=4))
    ids, short, pixels = global_batch(int(sys.argv[3]))
    local = slice(rank * ids.shape[0] // world, (rank + 1) * ids.shape[0] // world)
    loss = model(input_ids=ids[local], pixel_values=pixels[local], short_input_ids=short[local], return_loss=True).loss
    loss.backward()
    grads = {}
    for name, param in model.named_parameters():
        if param.grad is not None:
            dist.all_reduce(param.grad)
            grads[name] = param.grad / world
    losses = [torch.zeros(()) for _ in range(world)]
    dist.all_gather(losses, loss.detach())
    if rank == 0:
        torch.save({"losses": torch.stack(losses), "grads": grads}, sys.argv[1])
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
