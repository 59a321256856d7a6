"""``neurocontrast train stnet|tmaxnet``: train the perfusion networks (see :mod:`neurocontrast.training.recipes`)."""

from __future__ import annotations

import argparse

from neurocontrast.training import distributed


def _common(p: argparse.ArgumentParser, epochs: int, steps: int, lr: float, patience: int, batch: int) -> None:
    p.add_argument("--out", required=True, help="run folder (checkpoints, history.jsonl)")
    p.add_argument("--data", default=None, help="user data folder (layout in docs/models/stnet.md); "
                                                "default: synthetic phantom slices generated on the fly")
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--steps-per-epoch", type=int, default=steps)
    p.add_argument("--batch-size", type=int, default=batch)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--patience", type=int, default=patience, help="early stopping: epochs without improvement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.safetensors")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this wall time")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--export", default=None, help="models folder to write <name>.safetensors/.json into "
                                                  "(default <out>/model)")
    p.add_argument("--name", default=None, help="registry name of the exported model")
    distributed.add_options(p)  # --nproc, --nnodes, --rdzv: data-parallel under torchrun


def register(groups) -> None:
    """Add ``train stnet`` and ``train tmaxnet`` to ``groups["train"]``."""
    train = groups["train"]
    p = train.add_parser("stnet", help="train ST-Net (Cao et al.) on phantoms or user data",
                         description="Train ST-Net: MAE + physics loss, Adam, early stopping.")
    _common(p, epochs=400, steps=50, lr=1e-4, patience=50, batch=512)
    p.add_argument("--physics-weight", type=float, default=0.1, help="w of eq. 9")
    p.add_argument("--lesion-ratio", type=float, default=0.5, help="lesion:normal voxels (0.5 = 1:2)")
    p.add_argument("--stride", type=int, default=1, help="patch-centre stride (voxels)")
    p.add_argument("--dropout", type=float, default=0.5, help="head dropout (paper 0.5)")
    p.add_argument("--student", action="store_true", help="train ST-Net-S, the small fast student")
    p.add_argument("--no-cbv-skip", action="store_true",
                   help="no CBV skip (the network regresses CBV itself instead of correcting the indicator-dilution "
                        "sum of the centre curve)")
    p.add_argument("--teacher", default=None, help="registered ST-Net name (or models folder with stnet.json) to "
                                                   "distil from (with --student)")
    p.add_argument("--init", default=None, help="models folder + name 'DIR:NAME' of weights to start from")
    p.add_argument("--distill-weight", type=float, default=1.0, help="weight of the MAE to the teacher")
    p.set_defaults(func=distributed.launcher(_run_stnet, ("train", "stnet"), p))
    q = train.add_parser("tmaxnet", help="train the AIF-free Tmax net (Hess et al.)",
                         description="Train the Tmax net: weighted Laplace NLL, temporal-shift augmentation.")
    _common(q, epochs=30, steps=50, lr=5e-4, patience=10, batch=4)
    q.add_argument("--encoding", type=int, default=256, help="sequence-encoding size")
    q.add_argument("--n-frames", type=int, default=64, help="resampled series length (divisible by 4)")
    q.add_argument("--slice-size", type=int, default=48, help="synthetic slice size (voxels)")
    q.add_argument("--crop", type=int, default=None, help="train on crop x crop windows (half on lesions)")
    q.add_argument("--lr-halving-epochs", type=int, default=4, help="halve the learning rate every N epochs")
    q.add_argument("--input-scale", type=float, default=1.0, help="factor on the relative signal drops")
    q.add_argument("--nll-beta", type=float, default=1.0, help="beta-NLL exponent (0 = plain Laplace NLL)")
    q.add_argument("--dropout", type=float, default=0.1, help="dropout of the spatial layers (paper 0.5)")
    q.add_argument("--curve-norm", choices=("none", "peak"), default="peak",
                   help="peak: divide every voxel curve (and the arterial patch) by its maximum; none: as the paper")
    q.add_argument("--align-frame", type=int, default=12,
                   help="shift each series so that the arterial peak lies on this frame; -1: no alignment")
    q.add_argument("--warmup-l1-epochs", type=int, default=2, help="train the mean with L1 for the first N epochs")
    q.add_argument("--delayed-weight", type=float, default=1.0,
                   help="extra loss weight for voxels with true Tmax > --delayed-threshold s")
    q.add_argument("--delayed-threshold", type=float, default=4.0, help="s (see --delayed-weight)")
    q.add_argument("--select-on", choices=("loss", "mae"), default="mae",
                   help="best epoch by validation NLL (loss) or Tmax MAE (mae)")
    q.add_argument("--varied", action="store_true",
                   help="synthetic slices with varied acquisition and bolus (TR 1-2.5 s, 40-80 frames, baseline "
                        "5-20 frames, recirculation, T1 leakage; datasets.VARIED)")
    q.add_argument("--init", default=None, help="registered Tmax net name or 'DIR:NAME' to fine-tune from")
    q.set_defaults(func=distributed.launcher(_run_tmaxnet, ("train", "tmaxnet"), q))


def _finish(model, meta, args, name, extra) -> int:
    import os
    from neurocontrast.training.recipes import export

    if not distributed.is_main():  # rank 0 exports and reports
        return 0
    out = args.export or os.path.join(args.out, "model")
    info = export(model, meta, out, args.name or name, "user data " + args.data if args.data else
                  "synthetic phantom slices (neurocontrast.training.datasets.random_slice)", extra)
    print(f"best epoch {meta['best_epoch']} (val loss {meta['best_loss']:.4f}); model written to "
          f"{info.weights_path} (sha256 {info.sha256[:12]}…)")
    return 0


def _run_stnet(args) -> int:
    import torch
    from neurocontrast.training.recipes import train_stnet

    torch.set_num_threads(max(1, args.threads))
    teacher = init = None
    if args.teacher:
        teacher = _load(args.teacher, "stnet")[0]
    if args.init:
        init = _load(args.init, "stnet-s" if args.student else "stnet")[0].state_dict()
    model, meta = train_stnet(args.out, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                              batch_size=args.batch_size, lr=args.lr, patience=args.patience, seed=args.seed,
                              resume=args.resume, max_minutes=args.max_minutes, physics_weight=args.physics_weight,
                              lesion_ratio=args.lesion_ratio, stride=args.stride, data_dir=args.data,
                              student=args.student, teacher=teacher, distill_weight=args.distill_weight,
                              init_state=init, dropout=args.dropout, cbv_skip=not args.no_cbv_skip)
    return _finish(model, meta, args, "stnet-s" if args.student else "stnet",
                   {"batch_size": args.batch_size, "lr": args.lr, "physics_weight": args.physics_weight,
                    "lesion_ratio": args.lesion_ratio, "stride": args.stride, "dropout": args.dropout,
                    "cbv_skip": not args.no_cbv_skip,
                    "steps_per_epoch": args.steps_per_epoch, "teacher": args.teacher, "init": args.init,
                    "distill_weight": args.distill_weight if args.teacher else None})


def _load(spec: str, default_name: str):
    """'NAME', 'DIR' or 'DIR:NAME' → a loaded network (registry or models folder)."""
    import os
    from neurocontrast.perfusion.deep import load_network

    if ":" in spec:
        folder, name = spec.rsplit(":", 1)
        return load_network(name, folder)
    if os.path.isdir(spec):
        return load_network(default_name, spec)
    return load_network(spec)


def _run_tmaxnet(args) -> int:
    import torch
    from neurocontrast.training.recipes import train_tmaxnet

    torch.set_num_threads(max(1, args.threads))
    model, meta = train_tmaxnet(args.out, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                                batch_size=args.batch_size, lr=args.lr, patience=args.patience, seed=args.seed,
                                resume=args.resume, max_minutes=args.max_minutes, encoding=args.encoding,
                                n_frames=args.n_frames, slice_size=args.slice_size, crop=args.crop,
                                lr_halving_epochs=args.lr_halving_epochs, nll_beta=args.nll_beta,
                                input_scale=args.input_scale, dropout=args.dropout, curve_norm=args.curve_norm,
                                align_frame=None if args.align_frame < 0 else args.align_frame,
                                warmup_l1_epochs=args.warmup_l1_epochs,
                                delayed_weight=args.delayed_weight, delayed_threshold_s=args.delayed_threshold,
                                select_on=args.select_on, data_dir=args.data, varied=args.varied,
                                init_state=_load(args.init, "tmaxnet")[0].state_dict() if args.init else None)
    return _finish(model, meta, args, "tmaxnet", {"batch_size": args.batch_size, "lr": args.lr,
                                                  "crop": args.crop, "lr_halving_epochs": args.lr_halving_epochs,
                                                  "nll_beta": args.nll_beta, "input_scale": args.input_scale,
                                                  "n_frames": args.n_frames, "slice_size": args.slice_size,
                                                  "dropout": args.dropout, "curve_norm": args.curve_norm,
                                                  "align_frame": None if args.align_frame < 0 else args.align_frame,
                                                  "warmup_l1_epochs": args.warmup_l1_epochs,
                                                  "delayed_weight": args.delayed_weight,
                                                  "delayed_threshold_s": args.delayed_threshold,
                                                  "select_on": args.select_on, "varied": args.varied,
                                                  "init": args.init,
                                                  "steps_per_epoch": args.steps_per_epoch})
