"""Print README's results tables (Markdown) from a collected results folder.

README's "Results from real pretrained weights" and "Results from fine-tuning" tables are
this script's output, pasted: every number comes from the files ``ptransfer collect`` wrote
(``summary.csv``, ``intervals.csv``, ``taxonomy.csv``), none is typed by hand.

    python scripts/readme_results.py results_antiberty --model antiberty
    python scripts/readme_results.py results_unirep --family unirep        # one row per size
    python scripts/readme_results.py results_finetune --finetune --model antiberty

A value reads "mean [95 % interval]" for one seed and "mean ± sd [interval]" over seeds (sd
of the per-seed scores; the interval over test proteins and seeds, docs/statistics.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

ARMS = ("pretrained", "random_init", "stat_transfer", "onehot")
ARM_TITLES = {"pretrained": "pretrained", "random_init": "random init",
              "stat_transfer": "stat transfer", "onehot": "one-hot"}


def value(mean: float, sd: float | None, low: float, high: float) -> str:
    """'0.566 ± 0.041 [0.466, 0.667]'; the sd left out when absent (one seed)."""
    if pd.isna(mean):
        return "-"
    spread = "" if sd is None or pd.isna(sd) else f" ± {sd:.3f}"
    interval = "" if pd.isna(low) or pd.isna(high) else f" [{low:.3f}, {high:.3f}]"
    return f"{mean:.3f}{spread}{interval}"


def arm_value(row: pd.Series, arm: str) -> str:
    column = f"{arm}_best"
    if column not in row or pd.isna(row[column]):
        return "-"
    return value(row[column], row.get(f"{column}_sd"), row.get(f"{column}_ci_low"),
                 row.get(f"{column}_ci_high"))


def seeds(summary: pd.DataFrame, arm: str) -> str:
    column = f"{arm}_n_seeds"
    if column not in summary or summary[column].dropna().empty:
        return ""
    counts = sorted({int(n) for n in summary[column].dropna()})
    return f" ({'/'.join(map(str, counts))} seed{'s' if counts[-1] > 1 else ''})"


def decided_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """One summary row per (task, test set, model): the one the class was decided on (a task
    selected by cross-validation also has a validation-selected row, which decides nothing)."""
    decided = summary[summary["classification"].fillna("").astype(str) != ""]
    keys = ["task", "eval_set", "model", "checkpoint"]
    duplicated = decided.duplicated(keys, keep=False)
    # selection.method=auto: where both exist, the decisions use the cross-validated cells
    decided = decided[~duplicated | (decided["selection"] == "cv")]
    duplicated = decided.duplicated(keys, keep=False)
    if duplicated.any():
        names = decided.loc[duplicated, keys].drop_duplicates().to_dict("records")
        raise SystemExit(f"several decided rows for {names}: pass one probe configuration")
    return decided


def ablation_table(summary: pd.DataFrame) -> str:
    """One row per task and test set of one model: each arm at its best layer, the verdicts."""
    rows = decided_rows(summary)
    header = ["task / test set", "metric", "selection"]
    header += [ARM_TITLES[arm] + seeds(rows, arm) for arm in ARMS]
    header += ["transfer", "pretraining", "class"]
    lines = [header]
    for _, row in rows.sort_values(["task", "eval_set"]).iterrows():
        lines.append([f"{row.task} {row.eval_set}", row.metric, row.selection,
                      *[arm_value(row, arm) for arm in ARMS],
                      row.transfer, row.pretraining, row.classification])
    return markdown(lines)


def size_table(summary: pd.DataFrame, taxonomy: pd.DataFrame) -> str:
    """One row per task, test set and size of one family, with the size axis's verdict."""
    rows = decided_rows(summary).sort_values(["task", "eval_set", "n_params"])
    verdicts = taxonomy.set_index(["task", "eval_set", "model", "checkpoint"])
    header = ["task / test set", "model (parameters)"]
    header += [ARM_TITLES[arm] + seeds(rows, arm) for arm in ARMS]
    header += ["transfer", "pretraining", "alignment along size", "class"]
    lines = [header]
    for _, row in rows.iterrows():
        verdict = verdicts.loc[(row.task, row.eval_set, row.model, row.checkpoint)]
        lines.append([f"{row.task} {row.eval_set}", f"{row.model} ({millions(row.n_params)})",
                      *[arm_value(row, arm) for arm in ARMS], row.transfer, row.pretraining,
                      verdict["alignment_size"], row.classification])
    return markdown(lines)


def finetune_table(intervals: pd.DataFrame, taxonomy: pd.DataFrame, model: str,
                   results: pd.DataFrame) -> str:
    """One row per task and test set: the frozen arms at their best layer, each fine-tune arm,
    one-hot, and the two fine-tune decisions."""
    modes = results.dropna(subset=["tune"]).drop_duplicates("head_config")
    mode_of = dict(zip(modes["head_config"], modes["tune"]))
    best = intervals[intervals["layer_choice"] == "best"].assign(
        tune=lambda f: f["head_config"].map(mode_of).fillna("frozen"))
    best = best[(best["tune"] != "frozen") | ~best["task"].isin(
        best.loc[best["selection"] == "cv", "task"]) | (best["selection"] == "cv")]
    arms = [("pretrained", "frozen"), ("random_init", "frozen"), ("pretrained", "lora"),
            ("random_init", "lora"), ("pretrained", "full"), ("random_init", "full")]
    header = ["task / test set", "metric"] + [f"{ARM_TITLES[a]} {mode}" for a, mode in arms]
    header += ["one-hot", "fine-tuning gain", "pretraining under fine-tuning"]
    lines = [header]
    for (task, eval_set), group in best.groupby(["task", "eval_set"], sort=True):
        row = [f"{task} {eval_set}", group["metric"].iloc[0]]
        for ablation, mode in arms:
            row.append(interval_value(group, model, ablation, mode))
        row.append(interval_value(group, "onehot", "onehot", "frozen"))
        verdict = taxonomy[(taxonomy.task == task) & (taxonomy.eval_set == eval_set)
                           & (taxonomy.model == model)]
        row += [verdict["finetune_gain"].iloc[0], verdict["pretraining_finetuned"].iloc[0]]
        lines.append(row)
    return markdown(lines)


def interval_value(group: pd.DataFrame, model: str, ablation: str, mode: str) -> str:
    arm = "onehot" if model == "onehot" else ablation
    picked = group[(group["model"] == model) & (group["arm"] == arm) & (group["tune"] == mode)]
    if picked.empty:
        return "-"
    if len(picked) > 1:
        raise SystemExit(f"several {model} {ablation} {mode} arms in one test set: "
                         f"{picked[['task', 'eval_set', 'head_config']].to_dict('records')}")
    r = picked.iloc[0]
    sd = r.seed_sd if r.n_seeds > 1 else None
    return value(r.estimate, sd, r.ci_low, r.ci_high)


def millions(n_params: float) -> str:
    return f"{n_params / 1e6:.2f}M" if n_params < 1e7 else f"{n_params / 1e6:.1f}M"


def markdown(lines: list[list]) -> str:
    rows = ["| " + " | ".join(str(cell) for cell in line) + " |" for line in lines]
    rows.insert(1, "|" + "---|" * len(lines[0]))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a folder `ptransfer collect` has run on")
    parser.add_argument("--model", help="one model's rows (ablation and fine-tune tables)")
    parser.add_argument("--family", help="one family's rows, one per size (size table)")
    parser.add_argument("--finetune", action="store_true", help="the fine-tuning table")
    args = parser.parse_args(argv)
    taxonomy = pd.read_csv(args.results / "taxonomy.csv")
    if args.finetune:
        print(finetune_table(pd.read_csv(args.results / "intervals.csv"), taxonomy, args.model,
                             pd.read_csv(args.results / "results.csv")))
        return
    summary = pd.read_csv(args.results / "summary.csv")
    if args.family:
        print(size_table(summary[summary["family"] == args.family], taxonomy))
    else:
        print(ablation_table(summary[summary["model"] == args.model]))


if __name__ == "__main__":
    main()
