"""`predict`'s arguments and options, declared once (Typer's `Annotated` style) so that every command
sharing an option shares its name, help and checks. The choices come from options.py, and are taken in
any case (`-f JSON`). Each option names its value plainly in `--help` (`N`, `FILE`, `[table|json]`).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any, List, Optional

import typer

from shufflenet_cli.options import BACKENDS, DECODE_IN, ENGINES, FORMATS, PRECISIONS


def _choices(name: str, values: tuple[str, ...]) -> Any:
    """A Typer choice type made from one of options.py's lists, so a choice is named in one place."""
    return Enum(name, {v: v for v in values}, type=str)


def choices_metavar(values: tuple[str, ...]) -> str:
    """`[table|json|jsonl|csv]`: a choice's values, as click shows them."""
    return "[" + "|".join(values) + "]"


Format = _choices("Format", FORMATS)
BackendName = _choices("BackendName", BACKENDS)
DecodeIn = _choices("DecodeIn", DECODE_IN)
Precision = _choices("Precision", PRECISIONS)
Engine = _choices("Engine", ENGINES)


PathsArg = Annotated[
    List[str],
    typer.Argument(
        help="Image files, directories (searched recursively), quoted glob patterns "
        "('photos/**/*.jpg'), http(s) URLs, s3:// objects or prefixes (folders), or - to read paths "
        "(or URLs) from stdin, one per line.",
        show_default=False,
        metavar="PATHS",
    ),
]
ModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        metavar="MODEL",
        help="Width: x0_5, x1_0, x1_5 or x2_0 (or shufflenet_v2_x1_0) [default: x1_0, or the width of --weights].",
        show_default=False,
    ),
]
WeightsOpt = Annotated[
    Optional[Path],
    typer.Option(
        metavar="FILE", help="Local weights file (a state dict; loaded with weights_only=True) instead of the cache."
    ),
]
LabelsOpt = Annotated[
    Optional[Path],
    typer.Option(metavar="FILE", help="Class names, one per line, for --weights with a different classifier."),
]
DeviceOpt = Annotated[
    str, typer.Option(metavar="DEVICE", help="auto (cuda if available, else cpu), cpu, cuda or cuda:N.")
]
BatchSizeOpt = Annotated[
    Optional[int],
    typer.Option(
        "--batch-size",
        "-b",
        min=1,
        metavar="N",
        help="Images per forward pass [default: CPU 16 per thread, at least 32; CUDA 128].",
        show_default=False,
    ),
]
WorkersOpt = Annotated[
    Optional[int],
    typer.Option(
        "--workers",
        "-j",
        min=0,
        metavar="N",
        help="Decode workers running ahead of inference; 0 decodes inline [default: number of cores, up to 16].",
        show_default=False,
    ),
]
DecodeInOpt = Annotated[
    DecodeIn,
    typer.Option(
        case_sensitive=False,
        metavar=choices_metavar(DECODE_IN),
        help="Decode workers are threads or processes. auto: processes on CUDA, threads on CPU.",
    ),
]
ThreadsOpt = Annotated[
    Optional[int],
    typer.Option(
        min=1,
        metavar="N",
        help="CPU inference threads: each batch is cut into this many slices run at once "
        "[default: number of cores, up to 16]. On CUDA: the backend's CPU threads [default: 1].",
        show_default=False,
    ),
]
TopkOpt = Annotated[
    int,
    typer.Option(
        "--topk",
        "-k",
        min=1,
        metavar="N",
        help="Predictions per image, at most the number of classes (a larger N is cut to that number).",
    ),
]
ThresholdOpt = Annotated[
    float, typer.Option(metavar="P", help="Drop predictions with a probability under this (0..1).")
]
FmtOpt = Annotated[
    Optional[Format],
    typer.Option(
        "--format",
        "-f",
        case_sensitive=False,
        metavar=choices_metavar(FORMATS),
        help="Output format [default: from --output's extension (.json, .jsonl, .csv), else table].",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Shorthand for --format json.")]
OutputOpt = Annotated[
    Optional[str],  # a str: `-o -` is stdout, `-o ./-` a file named '-'
    typer.Option(
        "--output",
        "-o",
        metavar="FILE",
        help="Write results to FILE (json: atomically; jsonl/csv: appended as they come); `-` is stdout.",
    ),
]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        help="With --output FILE (jsonl or csv): skip inputs already in FILE. Their error records are "
        "not tried again, and still make the exit code 1. csv: the file's last record is always done again "
        "(a killed run may have cut it between its rows)."
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing, non-empty --output FILE.")]
CsvSafeOpt = Annotated[
    bool,
    typer.Option(
        help="csv: start a path, label or error that a spreadsheet would run as a formula (=, +, -, @, tab, "
        "CR; or ') with ' (shown as text, and hidden, by spreadsheets). Give it again with --resume. "
        "See docs/security.md."
    ),
]
RecursiveOpt = Annotated[bool, typer.Option(help="Search directories recursively.")]
HiddenOpt = Annotated[bool, typer.Option(help="Include hidden files and folders (names starting with '.').")]
ExtOpt = Annotated[
    Optional[str],
    typer.Option(
        metavar="LIST",
        help="Only these extensions from directories, e.g. jpg,png [default: all Pillow opens].",
        show_default=False,
    ),
]
NullOpt = Annotated[bool, typer.Option("--null", "-0", help="With -: paths on stdin are NUL-separated (find -print0).")]
BackendOpt = Annotated[
    BackendName,
    typer.Option(
        case_sensitive=False,
        metavar=choices_metavar(BACKENDS),
        help="Inference engine. auto: onnxruntime on CPU at fp32 where installed, else torch.",
    ),
]
PrecisionOpt = Annotated[
    Precision,
    typer.Option(
        case_sensitive=False,
        metavar=choices_metavar(PRECISIONS),
        help="Inference precision (fp16/bf16 use autocast).",
    ),
]
ExactDecodeOpt = Annotated[
    bool,
    typer.Option(
        "--exact-decode",
        help="Decode every image at full size: the weights' own preprocessing, byte for byte. By default a "
        "JPEG with a shorter side of at least 8x the resize size (2,048 px; 1,856 for x1_5 and x2_0) is decoded "
        "at a reduced DCT scale, which is faster on big photos, and decoded again at full size when its top "
        "two classes come out close, so that its top-1 class is the full decode's (probabilities may differ "
        "in the second or third decimal). Measurements: docs/decoding.md.",
    ),
]
FastDecodeOpt = Annotated[
    bool,
    typer.Option(
        "--fast-decode",
        help="Decode JPEGs with a shorter side of at least 4x the resize size (1,024 px; 928 for x1_5 and "
        "x2_0) at a reduced DCT scale (never below twice "
        "the resize size), and never again at full size: faster still, but on some photos top-1 differs "
        "from the full decode's (near-ties). Measurements: docs/decoding.md.",
    ),
]
GpuDecodeOpt = Annotated[
    bool,
    typer.Option(
        help="CUDA only: decode JPEGs in batches on the GPU (nvJPEG), resize and crop there; "
        "other files still decode on the CPU."
    ),
]
CudaGraphsOpt = Annotated[
    bool,
    typer.Option(
        help="CUDA, torch backend: from the second batch of a size on, replay the inference step from a "
        "captured CUDA graph (one launch per batch; the same kernels and results)."
    ),
]
ReportOpt = Annotated[
    Optional[Path],
    typer.Option(metavar="FILE", help="Also write a self-contained HTML report (thumbnails and bar charts) to FILE."),
]
TimeoutOpt = Annotated[
    float,
    typer.Option(
        min=0.001, metavar="SECONDS", help="For http(s) inputs: how long to wait to connect, or for more bytes."
    ),
]
MaxDownloadOpt = Annotated[
    float,
    typer.Option(
        min=0.001,
        metavar="MB",
        help="For http(s) and s3:// inputs: a larger download is that input's error, never held.",
    ),
]
EngineOpt = Annotated[
    Engine,
    typer.Option(
        case_sensitive=False,
        metavar=choices_metavar(ENGINES),
        help="local: this machine. ray: Ray Data on a Ray cluster (pip install 'shufflenet-cli[ray]'); "
        "inputs must be URLs, object storage or storage every node sees (docs/cluster.md).",
    ),
]
RayAddressOpt = Annotated[
    Optional[str],
    typer.Option(
        metavar="ADDR",
        help="With --engine ray: a running cluster (auto, or HOST:PORT) [default: $RAY_ADDRESS, else a private "
        "local instance].",
        show_default=False,
    ),
]
RayTimeoutOpt = Annotated[
    float,
    typer.Option(
        min=0.001,
        metavar="SECONDS",
        help="With --engine ray: stop with exit 3 when no record has come for this long (a stuck cluster).",
    ),
]
TimingsOpt = Annotated[bool, typer.Option(help="Print throughput and per-stage timings on stderr.")]
ProgressOpt = Annotated[bool, typer.Option(help="Show a progress bar on stderr (only on a terminal).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary on stderr.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Add the underlying exception to error messages.")]
DebugOpt = Annotated[bool, typer.Option(help="Also print the traceback of an error (same exit code).")]
