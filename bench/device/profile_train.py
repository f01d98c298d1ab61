"""Where does a training step's time go? Times appearance-stage steps at several batch sizes and
prints the profiler's top operations. Run on the GPU host after bench/train.py (it reuses its work
folder):  python bench/device/profile_train.py /tmp/trn/<clip>"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch


def main() -> None:
    from neuavatar import Dataset
    from neuavatar.avatar import AvatarConfig
    from neuavatar.avatar.data import AvatarData
    from neuavatar.avatar.model import Avatar
    from neuavatar.avatar.pipeline import _head_for
    from neuavatar.avatar.trainer import AvatarTrainer
    from neuavatar.track import Tracking

    root = Path(sys.argv[1])
    device = torch.device("cuda")
    tracking = Tracking.load(root / "tracking")
    head, _ = _head_for(tracking, device)
    config = AvatarConfig()
    data = AvatarData(Dataset(root / "dataset"), tracking, head, config.size, config.background, device)
    avatar = Avatar.create(head, torch.from_numpy(tracking.arrays["shape"]), gaussians_per_triangle=10, offset_rank=16,
                           colour_rank=8)
    trainer = AvatarTrainer(avatar, data, config)
    for stage in (1, 2):
        trainer.optimizer = trainer._make_optimizer(stage)
        for batch_size in (4, 8):
            def step():
                batch = data.batch(trainer._next_ids(batch_size))
                losses, _ = trainer.losses(stage, batch)
                loss = sum(v for k, v in losses.items() if k.startswith("w_"))
                trainer.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                trainer.optimizer.step()
            for _ in range(10):
                step()
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(40):
                step()
            torch.cuda.synchronize()
            print(f"stage {stage} batch {batch_size}: {(time.perf_counter() - t) / 40 * 1000:.1f} ms/step", flush=True)
    from torch.profiler import ProfilerActivity, profile

    trainer.optimizer = trainer._make_optimizer(2)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            batch = data.batch(trainer._next_ids(4))
            losses, _ = trainer.losses(2, batch)
            loss = sum(v for k, v in losses.items() if k.startswith("w_"))
            trainer.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            trainer.optimizer.step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=40))
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=14, max_name_column_width=40))


if __name__ == "__main__":
    main()
