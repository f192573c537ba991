"""Training throughput: the original AgeMapper data path against this workflow's, in one run.

Generates brain-extracted T1-like NIfTI volumes on FSL's 1 mm MNI grid (gzip, float32, as UK
Biobank ships ``T1_brain_to_MNI.nii.gz``), then measures on one device:

(a) original: per-sample gzip NIfTI load + crop / mean-normalise / scale / random roll on the
    CPU in a DataLoader (8 workers), fp32, default cuDNN settings, batch 12 (a reimplementation
    of the released code path);
(b) ours, one network: the preprocessing cache (agemapper.images.cache) streamed with prefetch,
    decoded and augmented on the device, the Trainer's own step (bf16 autocast,
    channels_last_3d and cudnn.benchmark on CUDA);
(c) ours, 3 replicates packed on one data stream (network-samples/s);

plus preprocessing and cache-read rates, cache bytes per volume, peak GPU memory per network,
and the study's projected GPU-hours (342 networks x epochs x training samples).

    python benchmarks/train_throughput.py                 # full size (160x192x160): GPU figures
    python benchmarks/train_throughput.py --tiny          # small grid and network: CPU smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agemapper.images.cache import VolumeCache, decode_numpy  # noqa: E402
from agemapper.images.contrasts import read_contrasts  # noqa: E402
from agemapper.images.grids import GRIDS  # noqa: E402
from agemapper.images.preprocess import preprocess_split, resample  # noqa: E402
from agemapper.networks.models import build_model  # noqa: E402
from agemapper.networks.training import Trainer, resolve_device  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FULL = {"channels": [32, 64, 64, 64, 64], "fully_connected": [96, 32], "shape": (160, 192, 160)}
TINY = {"channels": [4, 8, 8, 8, 8], "fully_connected": [16, 8], "shape": (32, 40, 32)}


def make_volumes(root: Path, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` subjects' T1_brain_to_MNI.nii.gz: tissue contrast inside the MNI brain, noise."""
    from agemapper.synth.anatomy import templates_1mm

    t = templates_1mm()
    base = (0.35 * t["csf"] + 0.75 * t["gm"] + 1.0 * t["wm"]) * 600.0 * t["brain"]
    grid = GRIDS["1mm"]
    rng = np.random.default_rng(seed)
    ids = [str(5000000 + i) for i in range(n)]
    for sid in ids:
        vol = base * (1 + 0.03 * rng.standard_normal(base.shape, dtype=np.float32))
        path = root / sid / "T1" / "T1_brain_to_MNI.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(vol.astype(np.float32), grid.affine_array), path)
    ages = rng.uniform(45, 82, n)
    return pd.DataFrame(
        {"subject": ids, "sex": "female", "split": "train", "half": "", "age": ages}
    )


class OriginalDataset(torch.utils.data.Dataset):
    """The released code's data path: decode the NIfTI for every sample, every epoch."""

    def __init__(self, paths, ages, scale: float, shape, max_shift: int = 2):
        self.paths, self.ages, self.scale, self.shape = paths, ages, scale, tuple(shape)
        self.crop = GRIDS["1mm"].crop_slices
        self.max_shift = max_shift

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        vol = np.asarray(nib.load(self.paths[i]).get_fdata(dtype=np.float32))[self.crop]
        vol = vol / vol.mean() / self.scale
        if vol.shape != self.shape:  # --tiny only: the original has no reduced grid
            vol = resample(vol, self.shape)
        shift = np.random.randint(-self.max_shift, self.max_shift + 1, 3)  # noqa: NPY002 (as released)
        vol = np.roll(vol, shift, axis=(0, 1, 2))
        if shift[2] < 0:
            vol[..., shift[2] :] = 0
        return torch.from_numpy(np.ascontiguousarray(vol[None], dtype=np.float32)), float(
            self.ages[i]
        )


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_reset(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gb(device):
    return torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else float("nan")


def original_path(subjects, root, spec, device, steps, warmup, workers, batch) -> dict:
    contrast = read_contrasts(REPO / "config/contrasts.tsv")["T1_nonlinear"]
    paths = [str(contrast.path_for(root, s)) for s in subjects.subject]
    data = OriginalDataset(paths, subjects.age.to_numpy(), contrast.scale_factor, spec["shape"])
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=workers > 0,
    )
    torch.backends.cudnn.benchmark = False  # the original's defaults
    torch.manual_seed(0)
    model = build_model({"architecture": "agemapper", **_model(spec)}, spec["shape"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    _peak_reset(device)
    done, start = 0, None
    while done < warmup + steps:
        for x, y in loader:
            if done == warmup:
                _sync(device)
                start = time.perf_counter()
            x, y = x.to(device), y.float().to(device)
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x).reshape(-1), y)
            loss.backward()
            opt.step()
            done += 1
            if done == warmup + steps:
                break
    _sync(device)
    seconds = time.perf_counter() - start
    return {"samples_per_s": steps * batch / seconds, "gpu_gb": _peak_gb(device)}


def _model(spec):
    return {"channels": spec["channels"], "fully_connected": spec["fully_connected"]}


def our_path(cache, spec, device, steps, warmup, batch, replicates, tmp, runtime) -> dict:
    training = {"epochs": 1, "batch_size": batch, "learning_rate": 1e-3, "loss": "mse"}
    training["augmentation"] = {"max_shift": 2}
    training["precision"] = "auto"  # bf16 autocast on CUDA (the study default is fp32)
    _peak_reset(device)
    trainer = Trainer(
        cache,
        cache,
        {"architecture": "agemapper", **_model(spec)},
        training,
        list(range(1, replicates + 1)),
        ("bench",),
        tmp / "ckpt.safetensors",
        device=str(device),
        preload_bytes=0,
        speed=runtime,
    )
    n = len(trainer.train)
    gen = torch.Generator().manual_seed(0)
    need = warmup + steps
    perm = torch.cat([torch.randperm(n, generator=gen) for _ in range(math.ceil(need * batch / n))])
    indices = (perm[i * batch : (i + 1) * batch] for i in range(need))
    start = None
    for i, (x, y) in enumerate(trainer.train.batches(indices)):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        trainer._train_batch((x, y), [(rep, None) for rep in trainer.reps])  # shared batch
    _sync(device)
    seconds = time.perf_counter() - start
    rate = steps * batch / seconds
    return {
        "samples_per_s": rate,
        "network_samples_per_s": rate * replicates,
        "gpu_gb_per_network": _peak_gb(device) / replicates,
        "settings": trainer.speed,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--tiny",
        action="store_true",
        help="CPU smoke test: small grid and network, and (unless given) 12 subjects, 2 steps",
    )
    ap.add_argument("--device", default="auto")
    ap.add_argument("--subjects", type=int, help="generated NIfTI volumes (48; --tiny 12)")
    ap.add_argument("--steps", type=int, help="timed steps per path (30; --tiny 2)")
    ap.add_argument("--warmup", type=int, help="(5; --tiny 1)")
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--workers", type=int, help="DataLoader workers of path (a) (8; --tiny 2)")
    ap.add_argument("--compile", action="store_true", help="torch.compile in (b) and (c)")
    ap.add_argument(
        "--first-conv", default="cudnn", choices=["cudnn", "shifted"], help="in (b) and (c)"
    )
    ap.add_argument("--study-networks", type=int, default=342)
    ap.add_argument("--study-epochs", type=int, default=100)
    ap.add_argument("--study-samples", type=int, default=9000, help="training samples/network")
    ap.add_argument("--workdir", type=Path, help="keep generated data here (default: temp)")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args(argv)
    for name, full, tiny in (
        ("subjects", 48, 12),
        ("steps", 30, 2),
        ("warmup", 5, 1),
        ("workers", 8, 2),
    ):
        if getattr(args, name) is None:
            setattr(args, name, tiny if args.tiny else full)
    spec = TINY if args.tiny else FULL
    device = torch.device(resolve_device(args.device))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = args.workdir or Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        root = tmp / "subjectsAll"
        t0 = time.perf_counter()
        subjects = make_volumes(root, args.subjects)
        print(f"generated {args.subjects} NIfTI volumes in {time.perf_counter() - t0:.0f} s")
        figures = run(args, spec, device, subjects, root, tmp)
    figures.update(device=_device_name(device), date=time.strftime("%Y-%m-%d"), argv=sys.argv[1:])
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return figures


def run(args, spec, device, subjects, root, tmp) -> dict:
    contrast = read_contrasts(REPO / "config/contrasts.tsv")["T1_nonlinear"]
    cache = tmp / "cache" / "female_train.cache"
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    preprocess_split(
        subjects,
        contrast,
        root,
        spec["shape"],
        cache,
        cache.with_suffix(".tsv"),
        cache.with_suffix(".json"),
        threads=threads,
    )
    prep = len(subjects) / (time.perf_counter() - t0)
    vc = VolumeCache(cache)
    batches = [np.arange(s, min(s + 12, len(vc))) for s in range(0, len(vc), 12)]
    packed_rate = _rate(lambda: [vc.packed(b) for b in batches], len(vc))  # host side, GPU path
    read = _rate(
        lambda: [decode_numpy(*vc.packed(b)[:2], vc.volume_shape) for b in batches], len(vc)
    )
    files = sorted(root.rglob("*.nii.gz"))
    nifti_mb = np.mean([p.stat().st_size for p in files]) / 1e6
    nifti_read = _rate(lambda: [nib.load(f).get_fdata(dtype=np.float32) for f in files], len(files))
    common = dict(steps=args.steps, warmup=args.warmup, batch=args.batch)
    runtime = {"compile": args.compile, "first_conv": args.first_conv}
    a = original_path(subjects, root, spec, device, workers=args.workers, **common)
    b = our_path(cache, spec, device, replicates=1, tmp=tmp, runtime=runtime, **common)
    c = our_path(cache, spec, device, replicates=3, tmp=tmp, runtime=runtime, **common)
    work = args.study_networks * args.study_epochs * args.study_samples

    def hours(rate):
        return work / rate / 3600

    rows = [
        ("(a) original path, 1 network", a["samples_per_s"], a["samples_per_s"], a["gpu_gb"]),
        ("(b) ours, 1 network", b["samples_per_s"], b["samples_per_s"], b["gpu_gb_per_network"]),
        (
            "(c) ours, 3 packed",
            c["samples_per_s"],
            c["network_samples_per_s"],
            c["gpu_gb_per_network"],
        ),
    ]
    print(
        f"\ndevice {_device_name(device)}; grid {spec['shape']}; batch {args.batch}; "
        f"{args.steps} timed steps after {args.warmup}; ours: {b['settings']}"
    )
    print(
        f"NIfTI .gz {nifti_mb:.2f} MB/volume; cache {vc.stored_bytes().mean() / 1e6:.2f} MB/volume "
        f"(dense float16 {vc.dense_bytes / 1e6:.2f}); preprocessing {prep:.1f} volumes/s "
        f"({threads} threads)"
    )
    print(
        f"one CPU thread reads {nifti_read:.1f} NIfTI volumes/s (gzip decode) and "
        f"{read:.0f} cache volumes/s (read + decode to dense float16), or {packed_rate:.0f} "
        "volumes/s read packed (the host's share when the GPU decodes)"
    )
    print(
        f"{'path':32s} {'samples/s':>10s} {'net-samples/s':>14s} {'GPU GB/net':>11s} "
        f"{'study GPU-h':>12s} {'vs (a)':>7s}"
    )
    for name, rate, net_rate, gb in rows:
        print(
            f"{name:32s} {rate:10.1f} {net_rate:14.1f} {gb:11.2f} {hours(net_rate):12.0f} "
            f"{net_rate / a['samples_per_s']:6.1f}x"
        )
    print(
        f"study: {args.study_networks} networks x {args.study_epochs} epochs x "
        f"{args.study_samples} samples"
    )
    return {
        "grid": list(spec["shape"]),
        "batch": args.batch,
        "nifti_mb_per_volume": nifti_mb,
        "cache_mb_per_volume": float(vc.stored_bytes().mean() / 1e6),
        "dense_mb_per_volume": vc.dense_bytes / 1e6,
        "preprocess_volumes_per_s": prep,
        "cache_read_volumes_per_s_one_thread": read,
        "nifti_read_volumes_per_s_one_thread": nifti_read,
        "cache_packed_read_volumes_per_s_one_thread": packed_rate,
        "original": a,
        "ours_one": b,
        "ours_packed": c,
        "study_gpu_hours": {
            "original": hours(a["samples_per_s"]),
            "ours_one": hours(b["network_samples_per_s"]),
            "ours_packed": hours(c["network_samples_per_s"]),
        },
    }


def _rate(work, items: int, seconds: float = 1.0) -> float:
    """Items per second of ``work()`` (repeated for at least ``seconds``, warm page cache)."""
    work()
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or done == 0:
        work()
        done += items
    return done / elapsed


def _device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


if __name__ == "__main__":
    main()
