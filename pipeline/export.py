"""`python -m pipeline export --out DIR`: hand the trained generator to someone else.

DIR gets:
  generator.safetensors  the EMA generator's weights (safetensors: no pickle, loads anywhere)
  config.json            what pipeline/model.py's build_generator needs to rebuild it
  model.py               a copy of pipeline/model.py (imports only torch)
  samples.png            64 images from the exported weights, latent seed 0 (the README's
                         loading example draws the same ones)
  training_images.csv    every training image: source, query, URLs, licence where known
  MODEL_CARD.md          what was trained on what, for how long, how well, and when

Everything comes from the project's files as they are: models/generator.pt, the
training set's ATTRIBUTION.csv with each image's query from the raw index, metrics/evaluate.json,
and the params dvc.lock recorded. Not a DVC stage: an export is made for someone,
once, from whatever the workspace (or a `dvc pull`) holds.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import shutil
import subprocess
from pathlib import Path

import torch
import yaml
from torchvision.utils import make_grid

from pipeline import contracts, paths
from pipeline.errors import PipelineError
from pipeline.images import write_csv_atomic, write_text_atomic
from pipeline.model import Generator, build_generator

SAMPLE_SEED = 0
SAMPLE_N = 64
IMAGE_FIELDS = ["id", "source", "query", "origin", "page_url", *contracts.LICENCE_COLUMNS]
UNKNOWN = "not reported by the source"


def sample_latents(n: int, latent_dim: int, seed: int = SAMPLE_SEED) -> torch.Tensor:
    """The latents of samples.png and of the README's loading example."""
    return torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))


def _load(model: Path) -> tuple[Generator, dict, dict]:
    if not model.is_file():
        raise PipelineError(f"{model}: not found; run `dvc repro train` or `dvc pull` first")
    try:
        ckpt = torch.load(model, map_location="cpu", weights_only=True)
        g = build_generator(ckpt["config"])
        g.load_state_dict(ckpt["state_dict"])
    except Exception as exc:  # a torn or foreign file: say which, not a traceback
        raise PipelineError(f"{model}: not a mario-gan generator ({exc}); re-run `dvc repro train`") from None
    return g.eval(), ckpt["config"], ckpt.get("meta", {})


def training_images() -> list[dict]:
    """The images the model was trained on, with what the downloader recorded about each."""
    rows = contracts.PROCESSED_ATTRIBUTION.read()
    raw = {r["id"]: r for r in contracts.RAW_INDEX.read()} if contracts.RAW_INDEX.path.is_file() else {}
    return [{k: r.get(k) or raw.get(r["id"], {}).get(k, "") for k in IMAGE_FIELDS} for r in rows]


def _lock_params() -> dict:
    """Params per stage as dvc.lock recorded them for the outputs in the workspace."""
    try:
        lock = yaml.safe_load(Path("dvc.lock").read_text())
        return {s: v.get("params", {}).get("params.yaml", {}) for s, v in lock["stages"].items()}
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return {}


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except OSError:
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _flat(d: dict, prefix: str = "") -> dict:
    """{"swd": {"avg": 1}} -> {"swd/avg": 1}, in file order."""
    out: dict = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}{k}/") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def _counts(rows: list[dict], key: str, empty: str) -> str:
    found = collections.Counter(r[key] or empty for r in rows)
    return "\n".join(f"| {name} | {n} |" for name, n in found.most_common())


def _yaml_block(data: dict) -> str:
    return "```yaml\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True).strip() + "\n```"


def model_card(config: dict, meta: dict, n_params: int, images: list[dict], metrics: dict) -> str:
    """MODEL_CARD.md text; every number in it comes from the arguments."""
    lock = _lock_params()
    train = meta.get("params") or lock.get("train", {}).get("train", {})
    data = {k: v for s in ("download", "dedup", "curate", "resize") for k, v in lock.get(s, {}).items()}
    kimg = meta.get("kimg")
    if metrics:
        quality = "\n".join(
            f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
            for k, v in _flat(metrics).items()
        )
        quality = (
            "Sliced Wasserstein distance (x1e3, lower is better) of EMA samples to the training\n"
            "set, and the floor: the same distance between two random halves of the training set.\n\n"
            f"| metric | value |\n|---|---|\n{quality}"
        )
    else:
        quality = f"Not measured: {paths.EVALUATE_METRICS} is missing (run `dvc repro evaluate`)."
    commit = _git_commit()
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""# mario-gan generator

A DCGAN generator that draws {config["resolution"]}x{config["resolution"]} RGB images in the style
of its training set. Exported {today}{f" from commit `{commit}`" if commit else ""}.

![64 samples, latent seed {SAMPLE_SEED}](samples.png)

## Model
- Architecture: DCGAN generator (`model.py`), {n_params:,} parameters, latent size
  {config["latent_dim"]}, upsampling `{config.get("upsample", "deconv")}`; EMA weights.
- Input: `z ~ N(0, I)` of shape (n, {config["latent_dim"]}). Output: (n, 3, {config["resolution"]},
  {config["resolution"]}) in [-1, 1]; `(x + 1) / 2` gives RGB in [0, 1].
- Trained for {f"{kimg:g} kimg ({meta.get('steps')} steps)" if kimg is not None else "an unknown length"}.

## Training data
{len(images)} images (`training_images.csv` lists each with its source page and licence).

| source | images |
|---|---|
{_counts(images, "source", "unknown")}

| licence | images |
|---|---|
{_counts(images, "license", UNKNOWN)}

Image-search results are mostly copyrighted pictures of a trademarked character. Check the
licences above before publishing samples; where the source reports none, assume all rights
reserved.

## Evaluation
{quality}

## Params
Training (`params.yaml` `train:`, as recorded in the generator file):

{_yaml_block(train)}

Data (`download`, `dedup`, `curate`, `resize`, as dvc.lock recorded them):

{_yaml_block(data) if data else "Not recorded (no dvc.lock)."}

## Use
```python
import json, torch
from safetensors.torch import load_file
from model import build_generator  # model.py from this folder

config = json.load(open("config.json"))
g = build_generator(config).eval()
g.load_state_dict(load_file("generator.safetensors"))
z = torch.randn({SAMPLE_N}, config["latent_dim"], generator=torch.Generator().manual_seed({SAMPLE_SEED}))
with torch.no_grad():
    images = (g(z) + 1) / 2  # the images of samples.png
```
"""


def export(out: Path, model: Path = paths.MODEL) -> list[Path]:
    """Write the export to `out`; returns the files written."""
    # Here, not at the top: `python -m pipeline` imports this module, and GPU machines lack safetensors.
    from safetensors.torch import save_file

    g, config, meta = _load(model)
    images = training_images()
    metrics_path = paths.EVALUATE_METRICS
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "generator.safetensors.tmp"
    # safetensors wants contiguous tensors that share no memory: a state dict's copies are.
    save_file(
        {k: v.contiguous().clone() for k, v in g.state_dict().items()}, str(tmp), metadata={"format": "pt"}
    )
    tmp.replace(out / "generator.safetensors")
    write_text_atomic(out / "config.json", json.dumps(config, indent=2) + "\n")
    shutil.copyfile(Path(__file__).with_name("model.py"), out / "model.py")
    with torch.no_grad():
        x = (g(sample_latents(SAMPLE_N, config["latent_dim"])) + 1) / 2
    grid = make_grid(x.clamp(0, 1), nrow=8, padding=2)
    from PIL import Image

    from pipeline.images import save_image_atomic

    pixels = grid.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    save_image_atomic(Image.fromarray(pixels), out / "samples.png")
    write_csv_atomic(out / "training_images.csv", IMAGE_FIELDS, images)
    n_params = sum(p.numel() for p in g.parameters())
    write_text_atomic(out / "MODEL_CARD.md", model_card(config, meta, n_params, images, metrics))
    names = [
        "generator.safetensors",
        "config.json",
        "model.py",
        "samples.png",
        "training_images.csv",
        "MODEL_CARD.md",
    ]
    return [out / n for n in names]


def main(args: argparse.Namespace) -> list[Path]:
    written = export(args.out, args.model)
    print(f"wrote {', '.join(p.name for p in written)} to {args.out}")
    return written
