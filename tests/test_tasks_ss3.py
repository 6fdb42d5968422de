"""SS3 loader: the real FLIP + NetSurfP files (parsed once per module) and hand-made ones."""

from __future__ import annotations

import zipfile
from pathlib import Path

import hydra.utils
import numpy as np
import pytest
from cli_helpers import SHARED_DATA as SHARED
from cli_helpers import needs_data
from omegaconf import OmegaConf

from ptransfer.data import DataUnavailable
from ptransfer.tasks.base import IGNORE, TaskDataError
from ptransfer.tasks.ss3 import load_ss3_task

CONF = Path(__file__).resolve().parents[1] / "conf" / "task"
REAL_FILES = ["flip_secondary_structure/splits.zip", "netsurfp_ss_test/CB513_HHblits.csv",
              "netsurfp_ss_test/TS115_HHblits.csv", "netsurfp_ss_test/CASP12_HHblits.csv"]
needs_ss = needs_data(*REAL_FILES)
H, E, C = 0, 1, 2


@pytest.fixture(autouse=True)
def _torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


@pytest.fixture(scope="module")
def real_task():
    """conf/task/ss3.yaml on ../shared/data with every test set, loaded once."""
    cfg = OmegaConf.create({"data": {"root": str(SHARED)},
                            "task": OmegaConf.load(CONF / "ss3.yaml")})
    cfg.task.test_sets = ["cb513", "ts115", "casp12", "new364"]
    return hydra.utils.instantiate(cfg.task, _convert_="all")


def test_config_defaults_to_the_three_netsurfp_test_sets():
    assert list(OmegaConf.load(CONF / "ss3.yaml").test_sets) == ["cb513", "ts115", "casp12"]


@needs_ss
def test_real_counts(real_task):
    sizes = {name: len(split) for name, split in real_task.splits.items()}
    # FLIP: 9,712 train, 1,080 val, 364 NEW364; 1wfb-A and 1tii-C (CB513) and 5jen-C (TS115)
    # are dropped from train (2) and val (1).
    assert sizes == {"train": 9710, "val": 1079, "cb513": 511, "ts115": 115, "casp12": 20,
                     "new364": 364}
    assert real_task.info["splits"]["train"]["test_overlap"] == 2
    assert real_task.info["splits"]["val"]["test_overlap"] == 1
    assert (real_task.level, real_task.kind, real_task.metric) == ("residue", "classification",
                                                                   "accuracy")
    assert real_task.classes == ["H", "E", "C"]


@needs_ss
def test_real_scored_residues(real_task):
    stats = real_task.info["splits"]
    # CB513: 144,011 residues, 83,991 inside the CB513 entries (cb513_mask), 564 of which
    # are disordered; TS115 / CASP12: every residue in the mask, minus disordered ones.
    assert (stats["cb513"]["n_residues"], stats["cb513"]["n_scored"]) == (144011, 83427)
    assert (stats["ts115"]["n_residues"], stats["ts115"]["n_scored"]) == (29704, 27501)
    assert (stats["casp12"]["n_residues"], stats["casp12"]["n_scored"]) == (6801, 6004)
    # FLIP mask.fasta has 186,876 zeros; the 3 dropped chains held 1 + 17 + 66 of them.
    unscored = sum(stats[s]["n_residues"] - stats[s]["n_scored"]
                   for s in ("train", "val", "new364"))
    assert unscored == 186876 - 84


@needs_ss
def test_real_first_protein_labels_and_mask(real_task):
    train = real_task.splits["train"]
    assert train.sequences[0].startswith("VTKPTIAAVGGYAMNNG")  # 1es5-A
    # sampled.fasta CCCCCCCCCEEEEEE..., mask.fasta 0011111...
    assert train.targets[0][:12].tolist() == [IGNORE, IGNORE] + [C] * 7 + [E] * 3
    assert all(len(t) == len(s) for t, s in zip(train.targets, train.sequences))
    assert all(t.dtype == np.int64 for t in train.targets[:10])


@needs_ss
def test_real_no_fit_protein_is_a_test_protein(real_task):
    fit = set(real_task.splits["train"].sequences) | set(real_task.splits["val"].sequences)
    for name in real_task.test_sets:
        assert not fit & set(real_task.splits[name].sequences), name


# ---------------------------------------------------------------- hand-made files

def write_flip_members(root: Path, sequences: str, sampled: str, mask: str) -> None:
    path = root / "flip_secondary_structure" / "splits.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in [("sequences", sequences), ("sampled", sampled), ("mask", mask)]:
            archive.writestr(f"splits/{member}.fasta", text)


def write_flip_ss(root: Path, entries: list[tuple[str, str, str, str, str]]) -> None:
    """entries: (id, sequence, labels, mask, header attributes)."""
    write_flip_members(root, "".join(f">{i}\n{s}\n" for i, s, *_ in entries),
                       "".join(f">{i} {a}\n{lab}\n" for i, _, lab, _, a in entries),
                       "".join(f">{i}\n{m}\n" for i, _, _, m, _ in entries))


def netsurfp_row(sequence: str, labels: str, disorder: str, mask: str) -> str:
    def spaced(values):
        return " ".join(values)
    return ",".join([spaced(sequence), spaced(labels),
                     spaced(labels),  # dssp8 is not read
                     spaced(f"{int(d)}.0" for d in disorder), spaced(f"{int(m)}.0" for m in mask)])


def write_netsurfp(root: Path, name: str, rows: list[str],
                   header: str = "input, dssp3, dssp8, disorder, cb513_mask") -> None:
    path = root / "netsurfp_ss_test" / f"{name}_HHblits.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")


TRAIN = "SET=train VALIDATION=False"
VAL = "SET=train VALIDATION=True"
TEST = "SET=test VALIDATION=False"


@pytest.fixture
def toy_root(tmp_path):
    write_flip_ss(tmp_path, [("a", "MKVLA", "CHHHC", "01111", TRAIN),
                             ("b", "GSEEK", "CEEEC", "11110", TRAIN),
                             ("c", "PPWWY", "CCEEC", "11111", VAL),
                             ("d", "AAAAA", "HHHHH", "11111", TEST),
                             ("e", "RRKKD", "CHHCC", "11111", TRAIN)])
    write_netsurfp(tmp_path, "CB513", [netsurfp_row("RRKKD", "CHHHC", "11110", "01111")])
    write_netsurfp(tmp_path, "TS115", [netsurfp_row("QQNNT", "CEECC", "01111", "11111")])
    return tmp_path


def test_toy_splits_masks_and_overlap(toy_root):
    task = load_ss3_task(toy_root, test_sets=["cb513", "ts115"])
    assert task.splits["train"].sequences == ["MKVLA", "GSEEK"]  # e: identical to a CB513 chain
    assert task.info["splits"]["train"]["test_overlap"] == 1
    assert [t.tolist() for t in task.splits["train"].targets] == [[IGNORE, H, H, H, C],
                                                                  [C, E, E, E, IGNORE]]
    assert task.splits["val"].targets[0].tolist() == [C, C, E, E, C]
    # CB513: scored where disorder == 1 and cb513_mask == 1
    assert task.splits["cb513"].targets[0].tolist() == [IGNORE, H, H, H, IGNORE]
    assert task.splits["ts115"].targets[0].tolist() == [IGNORE, E, E, C, C]
    assert "new364" not in task.splits


def test_toy_new364(toy_root):
    task = load_ss3_task(toy_root, test_sets=["new364"])
    assert task.test_sets == ["new364"]
    assert task.splits["new364"].sequences == ["AAAAA"]
    assert task.splits["train"].sequences == ["MKVLA", "GSEEK", "RRKKD"]


def test_unknown_test_set_name(toy_root):
    with pytest.raises(TaskDataError, match=r"task\.test_sets must be a non-empty list"):
        load_ss3_task(toy_root, test_sets=["cb513", "cb514"])


def test_missing_netsurfp_file_names_download(toy_root):
    with pytest.raises(DataUnavailable, match=r"CASP12_HHblits\.csv.*download ss3"):
        load_ss3_task(toy_root, test_sets=["casp12"])


def test_bad_label_letter_names_record(tmp_path):
    write_flip_ss(tmp_path, [("a", "MKVLA", "CHXHC", "11111", TRAIN)])
    with pytest.raises(TaskDataError, match=r"sampled\.fasta record a: label 'X' at residue 3"):
        load_ss3_task(tmp_path, test_sets=["new364"])


def test_bad_mask_value_names_record(tmp_path):
    write_flip_ss(tmp_path, [("a", "MKVLA", "CHHHC", "11211", TRAIN)])
    with pytest.raises(TaskDataError, match=r"mask\.fasta record a: mask value '2' at residue 3"):
        load_ss3_task(tmp_path, test_sets=["new364"])


def test_label_length_mismatch_names_record(tmp_path):
    write_flip_ss(tmp_path, [("a", "MKVLA", "CHHC", "11111", TRAIN)])
    with pytest.raises(TaskDataError, match=r"sequences\.fasta record a: 4 labels in "
                                            r"sampled\.fasta for a sequence of 5 residues"):
        load_ss3_task(tmp_path, test_sets=["new364"])


def test_record_missing_from_mask(tmp_path):
    write_flip_members(tmp_path, ">a\nMKVLA\n", f">a {TRAIN}\nCHHHC\n", ">zz\n11111\n")
    with pytest.raises(TaskDataError, match=r"mask\.fasta: no record a"):
        load_ss3_task(tmp_path, test_sets=["new364"])


def test_header_without_set(tmp_path):
    write_flip_ss(tmp_path, [("a", "MKVLA", "CHHHC", "11111", "VALIDATION=False")])
    with pytest.raises(TaskDataError, match=r"sampled\.fasta record a: header needs SET="):
        load_ss3_task(tmp_path, test_sets=["new364"])


def test_lowercase_sequence_in_fasta(tmp_path):
    write_flip_ss(tmp_path, [("a", "MKvLA", "CHHHC", "11111", TRAIN)])
    with pytest.raises(TaskDataError, match=r"record a: lowercase residue 'v' at position 3"):
        load_ss3_task(tmp_path, test_sets=["new364"])


def test_text_before_first_fasta_header(tmp_path):
    write_flip_members(tmp_path, "MKVLA\n>a\nMKVLA\n", f">a {TRAIN}\nCHHHC\n", ">a\n11111\n")
    with pytest.raises(TaskDataError, match=r"sequences\.fasta line 1: text before the first"):
        load_ss3_task(tmp_path, test_sets=["new364"])


def test_netsurfp_label_length_mismatch(toy_root):
    write_netsurfp(toy_root, "CASP12", [netsurfp_row("MKVLA", "CHHH", "11111", "11111")])
    with pytest.raises(TaskDataError, match=r"CASP12_HHblits\.csv row 1: 4 dssp3 labels for a "
                                            r"sequence of 5 residues"):
        load_ss3_task(toy_root, test_sets=["casp12"])


def test_netsurfp_non_binary_disorder(toy_root):
    row = netsurfp_row("MKVLA", "CHHHC", "11111", "11111").replace("1.0 1.0 1.0 1.0 1.0,",
                                                                   "1.0 0.5 1.0 1.0 1.0,", 1)
    write_netsurfp(toy_root, "CASP12", [row])
    with pytest.raises(TaskDataError, match=r"row 1: column 'disorder' value 0.5 at residue 2"):
        load_ss3_task(toy_root, test_sets=["casp12"])


def test_netsurfp_missing_column(toy_root):
    write_netsurfp(toy_root, "CASP12", ["M K,C C,C C,1.0 1.0"],
                   header="input, dssp3, dssp8, disorder")
    with pytest.raises(TaskDataError, match=r"CASP12_HHblits\.csv: missing column\(s\) "
                                            r"\['cb513_mask'\]"):
        load_ss3_task(toy_root, test_sets=["casp12"])


def test_netsurfp_multi_letter_residue_field(toy_root):
    write_netsurfp(toy_root, "CASP12", ["MK V,C C C,C C C,1.0 1.0 1.0,1.0 1.0 1.0"])
    with pytest.raises(TaskDataError, match=r"row 1: column 'input' must hold one residue"):
        load_ss3_task(toy_root, test_sets=["casp12"])


def test_repeated_fasta_id(tmp_path):
    write_flip_members(tmp_path, ">a\nMKVLA\n>a\nMKVLA\n", f">a {TRAIN}\nCHHHC\n", ">a\n11111\n")
    with pytest.raises(TaskDataError, match=r"sequences\.fasta record a: id appears twice"):
        load_ss3_task(tmp_path, test_sets=["new364"])
