"""``geopixel`` command line: ``eval`` (GCG metrics), ``eval-refer``, ``train``, ``predict`` and ``bench``.

``eval`` and ``eval-refer`` need no torch; ``train``, ``predict`` and ``bench`` import it when run.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


@app.command("eval")
def eval_cmd(
    gt_instances: Path = typer.Option(..., exists=True, dir_okay=False, help="EXPORT/coco/instances_{split}.json"),
    gt_captions: Path = typer.Option(..., exists=True, dir_okay=False, help="EXPORT/coco/captions_{split}.json"),
    pred: Path = typer.Option(..., exists=True, help="GLaMM-format predictions: JSON list, JSONL or folder of per-image JSON"),
    similarity_model: str | None = typer.Option(
        None, help="local sentence-embedding model folder for Recall's phrase similarity (needs torch)"),
    similarity: str = typer.Option("token-f1", help="lexical phrase similarity when no model is given: token-f1 | char-trigram"),
    matching: str = typer.Option("hungarian", help="mIoU/Recall pairing: hungarian (default) | glamm (greedy, as GLaMM)"),
    no_captions: bool = typer.Option(False, "--no-captions", help="skip CIDEr and METEOR"),
    out: Path | None = typer.Option(None, help="write all metrics as JSON here"),
) -> None:
    """GCG metrics (AP50, mIoU, Recall, CIDEr, METEOR) for uni-target, multi-target and all phrases."""
    from geopixel.eval.gcg import evaluate_gcg, load_ground_truth, read_predictions

    result = evaluate_gcg(load_ground_truth(gt_instances, gt_captions), read_predictions(pred),
                          similarity_model or similarity, matching, captions=not no_captions)
    typer.echo(result.table())
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result.to_dict(), indent=1))
        typer.echo(f"metrics → {out}")


@app.command("eval-refer")
def eval_refer_cmd(
    gt: Path = typer.Option(..., exists=True, dir_okay=False, help="JSON list of {id, segmentation (RLE)}"),
    pred: Path = typer.Option(..., exists=True, dir_okay=False, help="JSON list of {id, pred_mask (RLE)}"),
    out: Path | None = typer.Option(None, help="write the metrics as JSON here"),
) -> None:
    """Referring segmentation metrics: P@0.5–0.9, oIoU, mIoU (× 100 on screen, fractions in JSON)."""
    from geopixel.eval.refer import evaluate_refer_files

    metrics = evaluate_refer_files(gt, pred)
    for k, v in metrics.items():
        typer.echo(f"{k:8} {100 * v:.2f}" if isinstance(v, float) else f"{k:8} {v}")
    if out:
        out.write_text(json.dumps(metrics, indent=1))


@app.command("train")
def train_cmd(
    config: Path = typer.Option(..., exists=True, dir_okay=False, help="model/training YAML (geopixel/configs/)"),
    dataset: str = typer.Option(..., help="release as NAME==X.Y.Z (or NAME==latest)"),
    store: str | None = typer.Option(None, help="release store URI (default $GEOPIXELD_STORE)"),
    out: Path = typer.Option(Path("runs/geopixel"), help="output folder: checkpoints, train_log.csv"),
    split: str = typer.Option("train", help="release split to train on"),
    max_steps: int | None = typer.Option(None, help="override the config's max_steps"),
    resume: bool = typer.Option(True, help="resume from the latest checkpoint in OUT when there is one"),
) -> None:
    """Train a GeoPixel-style model on a release (LoRA LM, SAM mask decoder)."""
    from geopixel.train import TrainConfig, train

    cfg = TrainConfig.from_yaml(config)
    if max_steps is not None:
        cfg.train.max_steps = max_steps
    name, _, version = dataset.partition("==")
    summary = train(cfg, name, version or "latest", store, out, split=split, resume=resume)
    typer.echo(json.dumps(summary, indent=1))


@app.command("predict")
def predict_cmd(
    config: Path = typer.Option(..., exists=True, dir_okay=False, help="the training YAML"),
    dataset: str = typer.Option(..., help="release as NAME==X.Y.Z"),
    out: Path = typer.Option(..., help="predictions JSON (GLaMM format) to write"),
    checkpoint: Path | None = typer.Option(None, help="OUT/checkpoints/step_N/state.pt of a training run"),
    store: str | None = typer.Option(None, help="release store URI (default $GEOPIXELD_STORE)"),
    split: str = typer.Option("test", help="release split"),
    limit: int | None = typer.Option(None, help="only the first N samples"),
    max_new_tokens: int = typer.Option(512, help="generation limit per image"),
) -> None:
    """Generate grounded captions with masks for a release split (input of `geopixel eval`)."""
    from geopixel.predict import predict_release
    from geopixel.train import TrainConfig

    name, _, version = dataset.partition("==")
    path = predict_release(TrainConfig.from_yaml(config), name, version or "latest", store, checkpoint, out, split,
                           limit, max_new_tokens)
    typer.echo(f"predictions → {path}")


@app.command("bench")
def bench_cmd(
    config: Path | None = typer.Option(None, help="model YAML (default geopixel/configs/geopixel_7b.yaml)"),
    tokens: int = typer.Option(8192, help="sequence length"),
    steps: int = typer.Option(5, help="timed steps after warm-up"),
    checkpointing: str = typer.Option("both", help="LM activation checkpointing: both (on, then off), on or off"),
) -> None:
    """Step time and model TFLOP/s of the GeoPixel-scale model on one CUDA GPU (random weights).

    Model FLOPs are the work a step needs (counted without recomputation), reported against the reference
    H200 peak (775 bf16 TFLOP/s) and the bf16 matmul rate measured in the same run.
    """
    from geopixel.bench import run_bench

    settings = {"both": (True, False), "on": (True,), "off": (False,)}
    if checkpointing not in settings:
        raise typer.BadParameter("checkpointing must be both, on or off")
    typer.echo(run_bench(config, tokens, steps, checkpointing=settings[checkpointing]))


def main() -> None:
    """Console-script entry point (``geopixel = "geopixel.cli:main"``)."""
    app()


if __name__ == "__main__":
    main()
