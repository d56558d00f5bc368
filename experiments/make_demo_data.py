"""Make the small real-image CIFAR-10 sample shipped in the package for the offline demo.

    python experiments/make_demo_data.py --archive ../shared/data/cifar10-jpg.tgz

Takes the first ``--train-per-class`` / ``--test-per-class`` images of every class (sorted path order) of the full
image-folder archive, with their original JPEG bytes, into ``adainf_env/demo_data/cifar10_demo.tgz`` (same layout:
``train/<class>/NNNN.jpg``, ``test/<class>/NNNN.jpg``; readable with ``adainf_env.data.load_images``). The output is
byte-reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from adainf_env.data import demo_archive_path, write_archive_subset
from adainf_env.fileio import sha256_file
from adainf_lab.cli import parse_config, run_script

__all__ = ["Config", "main"]

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Config:
    """Subset a CIFAR-10 image-folder archive into the package's demo sample."""

    archive: Path = field(default=ROOT.parent / "shared" / "data" / "cifar10-jpg.tgz",
                          metadata={"help": "full image-folder archive (train/<class>/*.jpg, test/<class>/*.jpg)"})
    out: Path = field(default=demo_archive_path(), metadata={"help": "output .tgz"})
    train_per_class: int = field(default=500, metadata={"help": "train images per class"})
    test_per_class: int = field(default=200, metadata={"help": "test images per class"})


def main(argv: list[str] | None = None) -> Path:
    cfg = parse_config(Config, argv, raise_errors=True)
    counts = write_archive_subset(cfg.archive, cfg.out,
                                  per_class={"train": cfg.train_per_class, "test": cfg.test_per_class})
    print(f"wrote {cfg.out} ({cfg.out.stat().st_size / 1e6:.2f} MB, {counts}, sha256 {sha256_file(cfg.out)[:16]}…)")
    return cfg.out


if __name__ == "__main__":
    run_script(main)
