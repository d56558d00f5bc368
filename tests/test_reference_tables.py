"""The reference tables shipped inside the package (adainf_env.tables.reference): present, loadable, labelled."""

from __future__ import annotations

import numpy as np
import pytest

from adainf_env.errors import ConfigError
from adainf_env.plans import masks_from_codes
from adainf_env.tables.outcomes import find_split_tables
from adainf_env.tables.reference import REFERENCE_DIR, load_reference_table, reference_table_path


def test_reference_table_path_names_both_splits_and_refuses_others():
    assert reference_table_path("calib") == REFERENCE_DIR / "table_calib.npz"
    assert reference_table_path("test").is_file()
    for bad in ("train", "", "Calib"):
        with pytest.raises(ConfigError, match="calib"):
            reference_table_path(bad)


def test_shipped_dir_is_a_table_dir():
    assert find_split_tables(REFERENCE_DIR) == {s: reference_table_path(s) for s in ("calib", "test")}


@pytest.mark.parametrize("split", ["calib", "test"])
def test_shipped_tables_load_labelled(split):
    t = load_reference_table(split)
    assert t.meta["split"] == split and t.meta["backbone"] == "resnet18_cifar" and t.meta["dataset"] == "cifar10"
    assert t.num_samples == 10_000 and t.num_plans == 256 and t.num_blocks == 8 and t.num_classes == 10
    assert t.full_macs == 555_422_720
    np.testing.assert_array_equal(t.plan_masks, masks_from_codes(np.arange(256), 8))


def test_provenance_lists_the_shipped_bytes():
    """PROVENANCE.md's size and sha256 of every shipped data file, and the content hashes, match the files."""
    import json
    import re

    from adainf_env.fileio import sha256_file

    text = (REFERENCE_DIR / "PROVENANCE.md").read_text()
    rows = dict((m[0], (int(m[1].replace(",", "")), m[2]))
                for m in re.findall(r"\| `([\w.]+)` \| ([\d,]+) \| `([0-9a-f]{64})` \|", text))
    assert set(rows) == {"table_calib.npz", "table_test.npz", "calib_indices.npy", "summary.json"}
    for name, (size, digest) in rows.items():
        assert (REFERENCE_DIR / name).stat().st_size == size and sha256_file(REFERENCE_DIR / name) == digest, name
    meta = json.loads((REFERENCE_DIR / "table_meta.json").read_text())
    for split in ("calib", "test"):
        entry = meta["splits"][split]
        assert entry["arrays_sha256"] in text and entry["content_sha256"] in text
        assert load_reference_table(split).content_hash() == entry["content_sha256"]
    assert meta["checkpoint_sha256"] in text
