"""``neurocontrast web reader STUDY --reader R1`` and ``neurocontrast web perfusion DSC``.

The parsers need nothing beyond the standard library, so ``neurocontrast web --help`` works without the
``[web]`` extra and names the install line; starting an app checks the extra first.
"""

from __future__ import annotations

import argparse
import sys

from neurocontrast.web import INSTALL_HINT

_EPILOG = (f"Needs the [web] extra: {INSTALL_HINT}. Binds to 127.0.0.1 unless --host is given; with --host "
           "the page needs the access link printed at start (a per-reader token).")


def register(groups) -> None:
    sub = groups["web"]
    p = sub.add_parser("reader", help="serve the reading station for one reader",
                       description="Serve one reader's blinded reading session in the browser (the same "
                                   "session storage as the ReaderStudy Slicer module).", epilog=_EPILOG)
    p.add_argument("study", help="study folder (study.json)")
    p.add_argument("--reader", required=True, help="reader id of the design (e.g. R1)")
    _serve_options(p)
    p.add_argument("--new-token", action="store_true", help="replace the reader's access token (old link stops)")
    p.set_defaults(func=_reader)
    p = sub.add_parser("perfusion", help="serve the perfusion viewer for one DSC series",
                       description="Serve the PerfusionNet viewer: AIF/VOF, curves, method, maps, volumes, "
                                   "report PNG.", epilog=_EPILOG)
    p.add_argument("dsc", help="4D DSC series (NIfTI with JSON sidecar, NRRD, DICOM folder)")
    p.add_argument("--te", type=float, help="echo time in s (default: from the sidecar/header)")
    p.add_argument("--tr", type=float, help="repetition time in s (default: from the sidecar/header)")
    p.add_argument("--brain-mask", help="brain mask on the DSC grid (default: automatic)")
    _serve_options(p)
    p.set_defaults(func=_perfusion)


def _serve_options(p: argparse.ArgumentParser) -> None:
    from neurocontrast.web.access import DEFAULT_HOST, DEFAULT_PORT

    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to bind (default {DEFAULT_HOST}: this machine only); another address exposes "
                        "the app to the network, with a warning and an access token")
    p.add_argument("--open-browser", action="store_true", help="open the page in this machine's browser")


def _policy(args, token_source):
    from neurocontrast.web.access import AccessPolicy, exposure_warning, is_loopback

    token = None if is_loopback(args.host) else token_source()
    policy = AccessPolicy(host=args.host, port=args.port, token=token)
    if policy.exposed:
        print(exposure_warning(args.host, args.port), file=sys.stderr)
    return policy


def _reader(args: argparse.Namespace) -> int:
    from pathlib import Path

    from neurocontrast.web import require_web
    from neurocontrast.web.access import reader_token

    require_web()
    from neurocontrast.readerstudy.design import StudyDesign
    from neurocontrast_web.reading_app import serve_reader

    design = StudyDesign.load(args.study)  # clear errors before the server starts
    if args.reader not in design.readers:
        raise ValueError(f"unknown reader {args.reader!r}; the design lists {design.readers}")
    policy = _policy(args, lambda: reader_token(Path(args.study), args.reader, renew=args.new_token))
    print(f"reading station for reader {args.reader}: {policy.url()}", flush=True)
    return serve_reader(args.study, args.reader, policy, open_browser=args.open_browser)


def _perfusion(args: argparse.Namespace) -> int:
    import secrets

    from neurocontrast.web import require_web

    require_web()
    from neurocontrast_web.perfusion_app import serve_perfusion

    policy = _policy(args, lambda: secrets.token_urlsafe(24))
    print(f"perfusion viewer: {policy.url()}", flush=True)
    return serve_perfusion(args.dsc, policy, te_s=args.te, tr_s=args.tr, brain_mask=args.brain_mask,
                           open_browser=args.open_browser)
