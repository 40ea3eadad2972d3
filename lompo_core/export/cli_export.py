"""``lompo export RUN_DIR --out DIR``: the run's policy as policy.onnx + policy.json."""

from __future__ import annotations

import argparse
import json
import sys

HELP = (
    "Export a trained run's policy to ONNX (one recurrent step) with its sidecar policy.json: "
    "names and shapes, preprocessing, action scaling, the uncertainty threshold calibrated on "
    "the training dataset, sha256 and provenance. Written atomically; --verify checks torch "
    "against onnxruntime to 1e-5."
)
EXAMPLE = "lompo export runs/drawer --out policy/ --verify"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lompo_core.export.export import (
        DEFAULT_CALIBRATION_STEPS,
        DEFAULT_PERCENTILE,
        DEFAULT_SIGNAL_PERCENTILE,
    )

    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder made by lompo train")
    parser.add_argument("--out", required=True, help="the policy folder to write")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="compare torch with onnxruntime on random inputs and along a dataset episode; "
        "nothing is written if they differ by more than 1e-5",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="which checkpoint to export (default: the run's agent.select rule, from the "
        "dataset alone): 'last', 'offline' (the best held-out signal), 'average' (the actor "
        "averaged over the last third's checkpoints), 'best' (the best in-training sim "
        "evaluation, with eval.every > 0 and eval.keep_best) or a file such as "
        "RUN_DIR/checkpoints/ckpt-00016500.pt (training keeps the last log.keep_checkpoints); "
        "the sidecar records the choice as training.selection",
    )
    parser.add_argument(
        "--dataset",
        default=None,
        help="the training dataset, if it has moved since training (its content hash must match)",
    )
    parser.add_argument(
        "--percentile",
        type=float,
        default=DEFAULT_PERCENTILE,
        help="percentile of in-distribution uncertainty used as the threshold (default %(default)s)",
    )
    parser.add_argument(
        "--signal-percentile",
        type=float,
        default=DEFAULT_SIGNAL_PERCENTILE,
        help="percentile of in-distribution surprise and reconstruction error used as the "
        "out-of-distribution gate's thresholds (default %(default)s)",
    )
    parser.add_argument(
        "--calibration-steps",
        type=int,
        default=DEFAULT_CALIBRATION_STEPS,
        help="dataset steps used to calibrate, spread over episodes (default %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print the export report as JSON")


def run(args: argparse.Namespace) -> int:
    from lompo_core.export.export import export_run, report_dict

    def log(msg: str) -> None:
        print(f"lompo export: {msg}", file=sys.stderr)

    result = export_run(
        args.run_dir,
        args.out,
        checkpoint=args.checkpoint,
        dataset_dir=args.dataset,
        check=args.verify,
        overwrite=args.overwrite,
        percentile=args.percentile,
        calibration_steps=args.calibration_steps,
        signal_percentile=args.signal_percentile,
        log=log,
    )
    if args.json:
        print(json.dumps(report_dict(result), indent=2))
    else:
        cal = result.calibration
        print(
            f"wrote {result.out}/policy.onnx ({result.onnx_bytes / 1e6:.2f} MB, "
            f"sha256 {result.onnx_sha256[:12]}...) and policy.json\n"
            f"uncertainty threshold {result.uncertainty_threshold:.4g} "
            f"(p{cal['percentile']:g} of {cal['steps']} steps in {cal['episodes']} episodes)"
        )
        for name, value in result.signal_thresholds.items():
            pct = result.signal_calibration[name]["percentile"]
            print(f"{name} threshold {value:.4g} (p{pct:g}, same steps)")
        if result.verify is not None:
            print(result.verify.summary())
    return 0
