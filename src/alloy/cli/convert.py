"""`alloy convert`: a GGUF file to a Hugging Face directory, or a Hugging Face directory (or a
merge output) to a GGUF file."""

from __future__ import annotations

from pathlib import Path

import click

from alloy.cli.common import handle_errors, setup_logging
from alloy.io.sharding import human


@click.command()
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.option(
    "--dtype",
    default=None,
    help="GGUF type written: F32, F16 (default), BF16, Q8_0; or, from GGUF, the safetensors "
    "dtype: float32, float16, bfloat16 (default: F16/BF16 kept, quantized -> float32).",
)
@click.option(
    "--out-shard-size", default="5GB", show_default=True, help="From GGUF: largest shard."
)
@click.option("--force", is_flag=True, help="Replace DST if it exists.")
@click.option("-v", "--verbose", count=True, help="-v for info, -vv for debug.")
@handle_errors
def convert(
    src: Path, dst: Path, dtype: str | None, out_shard_size: str, force: bool, verbose: int
) -> None:
    """Convert SRC to DST: a .gguf file (or a directory holding one) becomes the Hugging Face
    directory DST; a Hugging Face directory becomes the GGUF file DST."""
    from alloy.convert import convert as run_convert

    setup_logging(verbose, False)
    done = run_convert(src, dst, dtype=dtype, force=force, out_shard_size=out_shard_size)
    size = (
        done.out.stat().st_size
        if done.out.is_file()
        else sum(p.stat().st_size for p in done.out.iterdir() if p.is_file())
    )
    click.echo(f"converted ({done.direction}): {done.tensors} tensors, {human(size)} -> {done.out}")
