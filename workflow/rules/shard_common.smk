# Which datasets are sharded, and helpers for the shard rules (workflow/rules/shard.smk).
# Included right after common.smk: the qc/score rules use the regexes below as wildcard
# constraints.

import sys
from types import SimpleNamespace


def _count_cells(path):
    try:
        from cafclassify.io._shard import count_cells
    except ImportError:  # snakemake runs in an environment without cafclassify (--use-conda)
        return None
    return count_cells(path)


def _input_path(dataset_id):
    return input_data(SimpleNamespace(dataset=dataset_id))


def _n_shards(dataset_id):
    max_cells = config["shard"]["max_cells"]
    if not max_cells:
        return 1
    if config["qc"]["doublets"]:
        # Scrublet compares each cell with all cells of its sample: not shardable
        return 1
    if is_simulated(datasets.loc[dataset_id, "path_or_url"]):
        return 1  # a synthetic control is small by design
    path = _input_path(dataset_id)
    n = _count_cells(path) if Path(path).exists() else None
    if n is None:
        print(
            f"cafclassify workflow: dataset {dataset_id}: the number of cells of {path} cannot "
            "be read from its header (not yet downloaded, a text table, or cafclassify is not "
            "installed where snakemake runs); it is processed without sharding.",
            file=sys.stderr,
        )
        return 1
    return -(-n // int(max_cells)) if n > int(max_cells) else 1


N_SHARDS = {d: _n_shards(d) for d in DATASETS}
SHARDED = [d for d in DATASETS if N_SHARDS[d] > 1]
# UCell scores depend on each cell only, so shards are scored separately; other methods
# use statistics over all cells and score the merged file.
SHARD_SCORED = [d for d in SHARDED if config["score"]["method"] == "ucell"]


def _ids_regex(ids):
    return "|".join(re.escape(i) for i in ids) if ids else "(?!x)x"  # (?!x)x matches nothing


SHARDED_RE = _ids_regex(SHARDED)
UNSHARDED_RE = _ids_regex([d for d in DATASETS if d not in SHARDED])
SHARD_SCORED_RE = _ids_regex(SHARD_SCORED)
NOT_SHARD_SCORED_RE = _ids_regex([d for d in DATASETS if d not in SHARD_SCORED])
MERGE_ONLY_RE = _ids_regex([d for d in SHARDED if d not in SHARD_SCORED])


def score_opts(wildcards):
    """Options of `cafclassify score` (the same for whole datasets and for shards)."""
    return step_opts(
        signatures=config["signatures"],
        method=config["score"]["method"],
        max_rank=config["score"]["max_rank"],
        min_coverage=(
            "library" if config["score"]["min_coverage"] is None else config["score"]["min_coverage"]
        ),
        on_low_coverage=config["score"]["on_low_coverage"],
        species=row(wildcards)["species"],
        seed=config["seed"],
    )


def shard_ids(wildcards):
    return [f"{i:03d}" for i in range(N_SHARDS[wildcards.dataset])]


def shard_files(name):
    def _files(wildcards):
        return [f"results/{wildcards.dataset}/shards/{s}/{name}" for s in shard_ids(wildcards)]

    return _files
