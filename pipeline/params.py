"""Typed parameters for every stage, loaded and validated once from params.yaml.

Each stage reads only its own section. Any problem (unknown key, wrong type,
value out of range) raises ParamsError with one line naming the param.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.errors import PipelineError

PARAMS_FILE = Path("params.yaml")


class ParamsError(PipelineError):
    """A value in params.yaml is missing, unknown, mistyped or out of range."""


@dataclass(frozen=True)
class DownloadParams:
    source: Literal["synthetic"] = "synthetic"
    count: int = 400
    seed: int = 0

    def validate(self) -> None:
        _check(self.count >= 1, "download.count", f"must be at least 1, got {self.count}")


@dataclass(frozen=True)
class DedupParams:
    hash_size: int = 8
    threshold: int = 8
    max_colour_diff: float = 8.0

    def validate(self) -> None:
        _check(
            self.hash_size in (4, 8, 16),
            "dedup.hash_size",
            f"must be 4, 8 or 16, got {self.hash_size}",
        )
        limit = self.hash_size * self.hash_size
        _check(
            0 <= self.threshold < limit,
            "dedup.threshold",
            f"must be between 0 and {limit - 1} bits for hash_size {self.hash_size}, got {self.threshold}",
        )
        _check(
            0 <= self.max_colour_diff <= 255,
            "dedup.max_colour_diff",
            f"must be between 0 and 255, got {self.max_colour_diff}",
        )


@dataclass(frozen=True)
class CurateParams:
    include_pending: bool = False


@dataclass(frozen=True)
class ResizeParams:
    size: int = 256
    mode: Literal["crop", "pad"] = "pad"
    background: str = "#ffffff"
    workers: int = 0

    def validate(self) -> None:
        _check(16 <= self.size <= 1024, "resize.size", f"must be 16..1024, got {self.size}")
        _check(self.workers >= 0, "resize.workers", "must be 0 (all cores) or more")
        try:
            parse_color(self.background)
        except ValueError:
            _fail("resize.background", f"must be a colour like '#ffffff', got {self.background!r}")


@dataclass(frozen=True)
class TrainParams:
    resolution: int = 64
    channels: int = 32
    latent_dim: int = 100
    batch_size: int = 32
    lr: float = 0.0002
    beta1: float = 0.5
    beta2: float = 0.999
    kimg: float = 45.0
    log_kimg: float = 2.0
    seed: int = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    threads: int = 0

    def validate(self) -> None:
        r = self.resolution
        _check(
            32 <= r <= 256 and r & (r - 1) == 0,
            "train.resolution",
            f"must be a power of two from 32 to 256, got {r}",
        )
        _check(1 <= self.channels <= 512, "train.channels", "must be 1..512")
        _check(self.latent_dim >= 1, "train.latent_dim", "must be at least 1")
        _check(self.batch_size >= 1, "train.batch_size", "must be at least 1")
        _check(0 < self.lr < 1, "train.lr", f"must be between 0 and 1, got {self.lr}")
        _check(0 <= self.beta1 < 1, "train.beta1", "must be in [0, 1)")
        _check(0 <= self.beta2 < 1, "train.beta2", "must be in [0, 1)")
        _check(self.kimg > 0, "train.kimg", f"must be positive, got {self.kimg}")
        _check(self.log_kimg > 0, "train.log_kimg", f"must be positive, got {self.log_kimg}")
        _check(self.threads >= 0, "train.threads", "must be 0 (torch default) or more")


@dataclass(frozen=True)
class SampleParams:
    n: int = 64
    nrow: int = 8
    seed: int = 42

    def validate(self) -> None:
        _check(self.n >= 1, "sample.n", f"must be at least 1, got {self.n}")
        _check(self.nrow >= 1, "sample.nrow", f"must be at least 1, got {self.nrow}")


@dataclass(frozen=True)
class Params:
    download: DownloadParams = field(default_factory=DownloadParams)
    dedup: DedupParams = field(default_factory=DedupParams)
    curate: CurateParams = field(default_factory=CurateParams)
    resize: ResizeParams = field(default_factory=ResizeParams)
    train: TrainParams = field(default_factory=TrainParams)
    sample: SampleParams = field(default_factory=SampleParams)


def parse_color(text: str) -> tuple[int, int, int]:
    """'#rrggbb' or '#rgb' to an RGB tuple; raises ValueError otherwise."""
    s = text.strip().lstrip("#")
    if len(s) == 3:
        s = "".join(c * 2 for c in s)
    if len(s) != 6:
        raise ValueError(text)
    return (int(s[0:2], 16), int(s[2:4], 16), int(s[4:6], 16))


def _fail(name: str, message: str) -> typing.NoReturn:
    raise ParamsError(f"params.yaml: {name}: {message}")


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        _fail(name, message)


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            _fail(name, f"must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            _fail(name, f"must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(name, f"must be a whole number, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(name, f"must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            _fail(name, f"must be a string, got {value!r}")
        return value
    return value


def _build(cls: type, section: str, raw: Any) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        _fail(section, f"must be a mapping of settings, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        _fail(
            f"{section}.{unknown[0]}",
            f"unknown setting (known: {', '.join(sorted(names))})",
        )
    values = {k: _coerce(f"{section}.{k}", v, hints[k]) for k, v in raw.items()}
    obj = cls(**values)
    if hasattr(obj, "validate"):
        obj.validate()
    return obj


def params_from_dict(data: dict[str, Any]) -> Params:
    """Build and validate Params from a parsed params.yaml mapping."""
    if not isinstance(data, dict):
        raise ParamsError("params.yaml: must be a mapping of stage sections")
    sections = {f.name: f for f in dataclasses.fields(Params)}
    hints = typing.get_type_hints(Params)
    unknown = sorted(set(data) - set(sections))
    if unknown:
        _fail(unknown[0], f"unknown section (known: {', '.join(sections)})")
    built = {name: _build(hints[name], name, data.get(name)) for name in sections}
    return Params(**built)


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read params.yaml and return validated, typed Params."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run from the project root") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ParamsError(f"{path}{where}: not valid YAML ({exc.__class__.__name__})") from None
    return params_from_dict(data)
