"""The paper's ablations (Tables 3-6 and one-step sampling) at tiny scale, as records the app shows.

    python scripts/run_ablations.py --list                         # every row: key, table, label, method
    python scripts/run_ablations.py                                # all rows (skips rows whose record exists)
    python scripts/run_ablations.py --tables 4,5 --steps 40 --clips 32 --threads 2
    python scripts/run_ablations.py --only t6-learned-gates-70-pruned --force

Needs the trained `adversarial-1step` (the parent of every trained row) and `optimized-xattn` (the discriminator's
frozen encoder) under --checkpoints. Writes ``<checkpoints>/ablations/<key>.json``; interrupted training runs
resume from ``<runs>/ablations/<key>``. See explorer/training/ablations.py and docs/ablations.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from explorer.training.ablations import (
    PARENT,
    TEACHER,
    AblationBudget,
    AblationRunner,
    quick_budget,
    select,
)


def build_parser() -> argparse.ArgumentParser:
    b = AblationBudget()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoints", default="checkpoints", help="stage folders; records go to <it>/ablations")
    p.add_argument("--runs", default="runs", help="training runs (resumable) go to <it>/ablations/<key>")
    p.add_argument("--tables", default="", help="comma list of 3,4,5,6,onestep (default: all)")
    p.add_argument("--only", default="", help="comma list of row keys (see --list)")
    p.add_argument("--steps", type=int, default=b.steps, help="finetune steps per trained row")
    p.add_argument("--gate-steps", type=int, default=b.gate_steps, help="steps choosing blocks (Table 6 rows)")
    p.add_argument("--batch", type=int, default=b.batch)
    p.add_argument("--lr", type=float, default=b.lr_g, help="generator learning rate")
    p.add_argument("--clips", type=int, default=b.clips, help="test clips scored per row")
    p.add_argument("--distill-weight", type=float, default=b.distill_weight,
                   help="distillation onto the stored teacher pairs (the shipped recipe); 0: SF-V's pure adversarial")
    p.add_argument("--pairs", default="", help="teacher-pair store (default: <runs>/teacher-pairs-<W>x<H>)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--force", action="store_true", help="re-run rows whose record exists")
    p.add_argument("--quick", action="store_true", help="micro budget (1 step, 2 clips): a smoke test")
    p.add_argument("--list", action="store_true", help="list the rows and exit")
    p.add_argument("--report", action="store_true",
                   help="print the recorded rows beside the paper's as markdown tables and exit (docs/ablations.md)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _cell(value: object, digits: int = 2) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _with_ci(value: object, ci: object) -> str:
    return _cell(value) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if isinstance(ci, (list, tuple)) else "")


def report(checkpoints: Path) -> str:
    """Markdown: per table, the paper's FVD / TFLOPs beside the project's FVD-proxy, PSNR (95% intervals over the
    clips), PSNR paired against the table's first row, Spearman, TFLOPs."""
    from explorer.records import ABLATION_TABLES, ablation_comparison, read_ablations

    project, problems = read_ablations(checkpoints)
    out = []
    for table, what in ABLATION_TABLES.items():
        out += [f"### {table}: {what}", "",
                "| row | paper FVD (25 fps) | paper TFLOPs | FVD-proxy [95%] | first-frame PSNR [95%] "
                "| PSNR vs first row, paired [95%] | motion Spearman | TFLOPs (full scale) |",
                "|---|---|---|---|---|---|---|---|"]
        for r in ablation_comparison(table, project):
            d = r.get("psnr_vs_first")
            paired = "–" if not d else f"{d['mean']:+.2f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]"
            out.append(f"| {r['label']} | {_cell(r.get('paper_fvd'), 0)} | {_cell(r.get('paper_tflops'))} "
                       f"| {_with_ci(r.get('fvd_proxy'), r.get('fvd_proxy_ci'))} "
                       f"| {_with_ci(r.get('first_frame_psnr'), r.get('first_frame_psnr_ci'))} | {paired} "
                       f"| {_cell(r.get('motion_spearman'))} | {_cell(r.get('tflops'))} |")
        out.append("")
    if problems:
        out.append("Problems: " + "; ".join(problems))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rows = select([t for t in args.tables.split(",") if t], [k for k in args.only.split(",") if k])
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.report:
        print(report(Path(args.checkpoints)))
        return 0
    if args.list:
        for a in rows:
            print(f"{a.key:42s} {a.table:9s} {a.method:22s} {a.label}")
        return 0
    ckpt = Path(args.checkpoints)
    missing = [s for s in (PARENT, TEACHER) if not (ckpt / s / "stage.json").is_file()]
    if missing:
        print(f"error: no trained {', '.join(missing)} under {ckpt} (run scripts/build_path.py first)",
              file=sys.stderr)
        return 2
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    budget = quick_budget() if args.quick else AblationBudget(
        steps=args.steps, gate_steps=args.gate_steps, batch=args.batch, lr_g=args.lr, clips=args.clips,
        threads=args.threads, distill_weight=args.distill_weight, pairs=args.pairs)
    command = "python scripts/run_ablations.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    runner = AblationRunner(ckpt, args.runs, budget, progress=not args.no_progress, command=command.strip())
    try:
        records = runner.run(rows, force=args.force)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{'key':42s} {'FVD-proxy':>9s} {'PSNR':>6s} {'rho':>6s} {'TFLOPs':>7s}")
    for r in records:
        tfl = "-" if r.get("tflops") is None else f"{r['tflops']:.2f}"
        print(f"{r.get('key', ''):42s} {r['fvd_proxy']:9.2f} {r['first_frame_psnr']:6.2f} "
              f"{r['motion_spearman']:6.2f} {tfl:>7s}")
    print(json.dumps({"records": len(records), "folder": str(ckpt / "ablations")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
