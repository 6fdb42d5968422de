"""A cell's door: its composed Hydra config, read once into a typed, frozen :class:`CellSpec`.

Below this door nothing reads the Hydra config: the cell's stages (task loading and its
fingerprint, encoder identity and loading, extraction, probes, rows) take the spec, or the
few plain values they need from it. The spec holds plain values only (strings, numbers,
dicts of the resolved config nodes) and no behaviour beyond derived properties, so it can be
built in a process, compared and pickled.

``cell_spec(cfg)`` is the only function here that knows Hydra. It computes the content
fingerprint of the weights the cell reads (``encoders.weights_fingerprint``, memoised on
disk), the one value of the spec that is not in the config itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ptransfer.embed.settings import ExtractSettings
from ptransfer.encoders.weights_fingerprint import weights_fingerprint
from ptransfer.heads.rules import head_for
from ptransfer.heads.spec import HeadSpec
from ptransfer.tasks.user_csv import file_stem

# conf/task/csv.yaml names the task ${ptransfer.file_stem:${.path}}, so cells of two CSV
# files get two task names (and never collide in collect). Registered on import of this
# module, which everything that resolves a cell config (checks, sweeps, cells) imports first.
OmegaConf.register_new_resolver("ptransfer.file_stem", file_stem, replace=True)

# Loaders whose tasks are per residue (every other loader gives per-protein tasks). Used only
# to plan without loading; the cell checks the loaded task agrees (task_data.check_shape).
RESIDUE_LOADERS = frozenset({"ptransfer.tasks.ss3.load_ss3_task"})


@dataclass(frozen=True)
class TaskRef:
    """Which task a cell fits: the resolved ``task`` node and the subsample drawn from it."""

    config: dict            # ``_target_`` (the loader) and its arguments
    subsample: dict | None  # split -> at most that many sequences (one fixed draw), or None

    @property
    def name(self) -> str:
        return str(self.config["name"])

    @property
    def declared_shape(self) -> tuple[str, str]:
        """(level, kind) the task loads as, read from its config alone (no data)."""
        if self.config.get("_target_") in RESIDUE_LOADERS:
            return "residue", "classification"
        return "protein", str(self.config.get("kind", "regression"))


@dataclass(frozen=True)
class EncoderSpec:
    """Everything that decides an encoder's features: which weights, changed how.

    ``checkpoint`` is kept as given (``checkpoint=1000`` stays an int): cell keys hash it so.
    ``weights`` is the content fingerprint of the weights the encoder reads (None: none,
    e.g. one-hot or a random init).
    """

    config: dict            # the resolved ``model`` node: _target_, name, family, arch, ...
    checkpoint: str | int
    ablation: str
    scope: str              # ablation.scope: full | reference
    seed: int
    precision: str          # extract.precision: fp32 | bf16 | fp16
    length_policy: str      # extract.length_policy: window | truncate
    weights: str | None

    @property
    def name(self) -> str:
        return str(self.config["name"])

    @property
    def family(self) -> str:
        return str(self.config.get("family", "onehot"))

    @property
    def checkpoint_name(self) -> str:
        return str(self.checkpoint)

    @property
    def checkpoints(self) -> dict:
        """``model.checkpoints``: name -> {path or url, step, fraction}, in pretraining order."""
        return dict(self.config.get("checkpoints") or {})

    @property
    def seeded(self) -> bool:
        """Whether the seed and scope change the weights (every ablation but pretrained)."""
        return self.ablation != "pretrained"

    @property
    def n_layers(self) -> int:
        return int(self.config["n_blocks"]) + 1

    @property
    def dim(self) -> int:
        return int(self.config["dim"])


SELECTION_METHODS = ("val", "cv", "auto")


@dataclass(frozen=True)
class SelectionSpec:
    """``selection``: how the layer and hyper-parameters are chosen (docs/statistics.md).

    ``val``: on the validation set (the cell's rows); ``cv``: also by k-fold cross-validation
    over train and validation, written beside as a second cell (``<cell_id>__cv``);
    ``auto``: ``cv`` where the validation set has fewer than ``min_val_items`` proteins.
    """

    method: str = "val"
    folds: int = 5
    min_val_items: int = 100

    @classmethod
    def from_mapping(cls, values) -> SelectionSpec:
        spec = cls(**{k: values[k] for k in ("method", "folds", "min_val_items")
                      if k in (values or {})})
        if spec.method not in SELECTION_METHODS:
            raise ValueError(f"config key 'selection.method': expected one of "
                             f"{list(SELECTION_METHODS)}, got {spec.method!r}")
        if spec.folds < 2:
            raise ValueError(f"config key 'selection.folds': expected at least 2, got "
                             f"{spec.folds}")
        return spec

    def cross_validates(self, n_val_proteins: int, head: str) -> bool:
        """Whether a cell with this validation size and probe adds the cross-validated
        selection (streamed probes have no stored features to cross-validate: never)."""
        if head == "streaming":
            return False
        return self.method == "cv" or (self.method == "auto"
                                       and n_val_proteins < self.min_val_items)


@dataclass(frozen=True)
class CellSpec:
    """One cell: task x encoder x head, and where it reads and writes."""

    task: TaskRef
    encoder: EncoderSpec
    head: HeadSpec
    extract: ExtractSettings
    seed: int               # the cell's seed: ablation, probe initialisation, data order
    results_dir: Path       # cells/<cell_id>/ and the fingerprint memo live here
    store_dir: Path         # embedding stores, one per encoder identity
    commit_seconds: float   # store.commit_seconds: a running extraction commits this often
    selection: SelectionSpec = SelectionSpec()

    @property
    def planned_head(self) -> str:
        """The probe the cell will use (``head.name`` resolved on the declared task shape)."""
        return _planned_head(self.task, self.head.name)

    @property
    def reads_store(self) -> bool:
        """Whether the cell reads an embedding store (one-hot and streaming cells do not)."""
        return _reads_store(self.encoder.family, self.planned_head)

    @property
    def name(self) -> str:
        """``task__model__checkpoint__ablation__s<seed>``: the readable part of the cell id."""
        return "__".join([self.task.name, self.encoder.name, self.encoder.checkpoint_name,
                          self.encoder.ablation, f"s{self.seed}"])


def _planned_head(task: TaskRef, head_name: str) -> str:
    level, kind = task.declared_shape
    return head_for(head_name, level, kind, task.name)


def _reads_store(family: str, head: str) -> bool:
    return family != "onehot" and head != "streaming"


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


def encoder_spec(cfg: DictConfig) -> EncoderSpec:
    """The encoder part of a cell config (``model``, ``checkpoint``, ``ablation``, ``seed``,
    ``extract.precision`` / ``length_policy``), with the fingerprint of its weights."""
    model = _plain(cfg.model)
    scope = cfg.ablation.get("scope", "full")
    checkpoint = cfg.checkpoint
    return EncoderSpec(
        config=model, checkpoint=checkpoint, ablation=cfg.ablation.name, scope=scope,
        seed=int(cfg.seed), precision=cfg.extract.precision,
        length_policy=cfg.extract.length_policy,
        weights=weights_fingerprint(model, str(checkpoint), cfg.ablation.name, scope,
                                    cfg.results_dir))


def cell_spec(cfg: DictConfig) -> CellSpec:
    """Read a composed cell config once into a :class:`CellSpec` (the cell's door)."""
    subsample = OmegaConf.to_container(cfg.subsample) if cfg.subsample else None
    store = cfg.get("store") or {}
    return CellSpec(
        task=TaskRef(config=_plain(cfg.task), subsample=subsample),
        encoder=encoder_spec(cfg),
        head=HeadSpec.from_mapping(_plain(cfg.head)),
        extract=ExtractSettings.from_mapping(_plain(cfg.extract)),
        seed=int(cfg.seed),
        results_dir=Path(cfg.results_dir),
        store_dir=Path(cfg.store_dir),
        commit_seconds=float(store.get("commit_seconds", 120.0)),
        selection=SelectionSpec.from_mapping(_plain(cfg.get("selection"))),
    )


def planned_head(cfg: DictConfig) -> str:
    """``CellSpec.planned_head`` read from a config, without building the whole spec."""
    return _planned_head(TaskRef(_plain(cfg.task), None), cfg.head.name)


def reads_store(cfg: DictConfig) -> bool:
    """``CellSpec.reads_store`` read from a config without fingerprinting weights (config
    checks and plans ask it of every combination of a sweep)."""
    return _reads_store(cfg.model.get("family", "onehot"), planned_head(cfg))
