"""Names and file access for the pipeline's output directory (OUTPUT/), and its commit manifest.

Everything downstream finds the pipeline's artifacts through these names, so the layout is
written down once. Paths may be local or `gs://`; every existence check, read and write goes
through `common.storage`, which answers the same way on both.

A pipeline run commits OUTPUT by writing `OUTPUT/_SUCCESS` last, as a JSON manifest of every
file the run wrote (see `Manifest`). Readers read exactly the files the manifest lists, never
a glob: shards left over from another run cannot be picked up, and a file that went missing
is an error. `embedding_plan.json`, written by the planner after the commit, is not listed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from common import storage

STATS = "stats.json"
CONFIG = "config.json"
PLAN = "embedding_plan.json"
SUCCESS = "_SUCCESS"
REPORT = "report.html"
STATISTICS_DIR = "statistics"
"""Per split, `<split>.pb`: a DatasetFeatureStatisticsList (pipeline/feature_statistics.py)."""
SCHEMA = "schema.pbtxt"
DATA_DIR = "data"
REJECTED_DIR = "rejected"
WORK_DIR = ".work"
TRAIN_PREFIX = "train"
VALIDATION_PREFIX = "validation"
EVAL_PREFIX = "eval"
SPLITS = (TRAIN_PREFIX, VALIDATION_PREFIX, EVAL_PREFIX)
REQUIRED_SPLITS = (TRAIN_PREFIX, EVAL_PREFIX)
"""Splits every manifest lists; a manifest written before the validation split existed lists
no validation shards, and reads as an empty validation split."""
TFRECORD_SUFFIX = ".tfrecord.gz"
EMPTY_SHARD_BYTES = 20
"""The size of a gzip stream without data (header, an empty block, trailer): a shard of at
most this size holds no examples; one more byte of data makes the stream longer."""
MANIFEST_VERSION = 2
"""Version 2 records each file's CRC32C beside its size; version 1 (sizes only) is still read,
its small files then checked by size only (see `require_complete`)."""
READ_MANIFEST_VERSIONS = (1, 2)
CHECKSUMS_DIR = "crc32c"
"""Under the run's `.work/`: each data shard's CRC32C, computed as the shard is written."""


LOG = logging.getLogger("pipeline")


class PipelineOutputError(RuntimeError):
    """An OUTPUT directory that is missing, unfinished or not a pipeline output."""


join = storage.join
exists = storage.exists


def read_text(directory: str, name: str) -> str:
    return storage.read_text(join(directory, name))


def write_text(directory: str, name: str, text: str) -> str:
    return storage.write_text(join(directory, name), text)


def read_json(directory: str, name: str) -> Any:
    return json.loads(read_text(directory, name))


def write_json(directory: str, name: str, value: Any) -> str:
    # Strict JSON: a NaN or infinity fails here, where it is made, not in a reader.
    return write_text(directory, name, json.dumps(value, indent=2, allow_nan=False) + "\n")


RENDERED_AFTER_COMMIT = frozenset({REPORT})
"""Files the planner re-renders after the commit (report.html gains the plan's capacity
section): they must exist, and their size may differ from the manifest's."""


def is_data_shard(relative: str, split: str) -> bool:
    """Whether a path relative to OUTPUT is a transformed TFRecord shard of `split`."""
    directory, _, name = relative.rpartition("/")
    return directory == DATA_DIR and name.startswith(f"{split}-") and name.endswith(TFRECORD_SUFFIX)


@dataclasses.dataclass(frozen=True)
class Manifest:
    """`OUTPUT/_SUCCESS`: what one committed pipeline run wrote.

    Attributes:
      output: the OUTPUT it was read from (not stored: the manifest's paths are relative, so
        a copied OUTPUT stays valid).
      run_id: the run's id; it also names the run's staging prefix and its data shards.
      committed_at: when the commit was made (UTC, ISO 8601).
      files: every file of the run, by its '/'-separated path relative to OUTPUT, with its
        size in bytes.
      data: per split ("train", "validation", "eval"), the relative paths of its TFRecord
        shards, sorted (an empty list for a split without shards).
      crc32c: every file's CRC32C as Cloud Storage reports it (base64 of the big-endian
        value), by the same paths as `files`; empty in a version 1 manifest.
    """

    output: str
    run_id: str
    committed_at: str
    files: dict[str, int]
    data: dict[str, list[str]]
    crc32c: dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def of_files(
        cls,
        output: str,
        run_id: str,
        committed_at: str,
        files: dict[str, int],
        crc32c: dict[str, str] | None = None,
    ) -> Manifest:
        """The manifest of a run that wrote `files` (relative path -> size), whose CRC32Cs
        are `crc32c` (relative path -> checksum, for each of `files`; None: unknown, a
        version 1 manifest)."""
        crc32c = crc32c or {}
        if crc32c and set(crc32c) != set(files):
            missing = sorted(set(files) ^ set(crc32c))
            raise ValueError(f"files and checksums differ (first: {missing[0]})")
        data = {split: sorted(f for f in files if is_data_shard(f, split)) for split in SPLITS}
        return cls(
            output,
            run_id,
            committed_at,
            dict(sorted(files.items())),
            data,
            dict(sorted(crc32c.items())),
        )

    def to_dict(self) -> dict[str, Any]:
        value = {
            "manifest_version": MANIFEST_VERSION if self.crc32c else 1,
            "run_id": self.run_id,
            "committed_at": self.committed_at,
            "files": self.files,
            "crc32c": self.crc32c,
            "data": self.data,
        }
        if not self.crc32c:
            del value["crc32c"]
        return value

    def verified_files(self) -> list[str]:
        """The files checked by content whenever the output is read: all but the data
        shards (their records carry their own CRCs; `damaged_files` checks them after a read
        failed), the rejected rows (read by no stage) and the files re-rendered after the
        commit."""
        return [
            f
            for f in self.files
            if not f.startswith((DATA_DIR + "/", REJECTED_DIR + "/"))
            and f not in RENDERED_AFTER_COMMIT
        ]

    @classmethod
    def from_dict(cls, output: str, value: Any) -> Manifest:
        """Parses a manifest; raises ValueError (saying what is wrong) if it is not one."""
        if not isinstance(value, dict) or value.get("manifest_version") not in (
            READ_MANIFEST_VERSIONS
        ):
            raise ValueError(
                f"not a version {' or '.join(map(str, READ_MANIFEST_VERSIONS))} commit manifest"
            )
        files, data = value.get("files"), value.get("data")
        if not all(isinstance(value.get(key), str) for key in ("run_id", "committed_at")):
            raise ValueError("run_id or committed_at missing")
        if not isinstance(files, dict):
            raise ValueError("files missing")
        if not all(isinstance(k, str) and isinstance(v, int) for k, v in files.items()):
            raise ValueError("files must map relative paths to sizes")
        if (
            not isinstance(data, dict)
            or not set(REQUIRED_SPLITS) <= set(data)
            or not set(data) <= set(SPLITS)
        ):
            raise ValueError(f"data must list the shards of {', '.join(SPLITS)}")
        if not all(isinstance(shards, list) for shards in data.values()):
            raise ValueError("data must map each split to a list of shards")
        data = {split: list(data.get(split, [])) for split in SPLITS}
        for split, shards in data.items():
            unlisted = [s for s in shards if s not in files]
            if unlisted:
                raise ValueError(f"{split} shard {unlisted[0]} is not among the files")
        crc32c = value.get("crc32c", {})
        if value["manifest_version"] >= 2 and (
            not isinstance(crc32c, dict)
            or set(crc32c) != set(files)
            or not all(isinstance(v, str) for v in crc32c.values())
        ):
            raise ValueError("crc32c must map each of the files to its checksum")
        return cls(output, value["run_id"], value["committed_at"], files, data, crc32c)

    def empty_shards(self, split: str) -> set[str]:
        """The full paths of a split's shards that hold no examples."""
        return {
            join(self.output, relative)
            for relative in self.data.get(split, [])
            if self.files[relative] <= EMPTY_SHARD_BYTES
        }

    def data_files(self, split: str) -> list[str]:
        """The full paths of a split's transformed TFRecord shards, sorted."""
        if split not in self.data:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        return [join(self.output, relative) for relative in self.data[split]]


def _rerun(output: str) -> str:
    return (
        f"rerun `python -m pipeline ... --output {output} --overwrite` before planning or training"
    )


def read_manifest(pipeline_output: str) -> Manifest:
    """Reads and parses `OUTPUT/_SUCCESS`, without checking the files it lists.

    Raises:
      PipelineOutputError: OUTPUT does not exist, or has no `_SUCCESS`, or its `_SUCCESS` is
        not a manifest (empty: written by an older version; or damaged).
    """
    output = pipeline_output.rstrip("/")
    marker = join(output, SUCCESS)
    if not storage.exists(marker):
        if not storage.exists(output):
            raise PipelineOutputError(
                f"{output}: no such pipeline output; run `python -m pipeline "
                "--config C --input PATTERN --output OUTPUT` first"
            )
        raise PipelineOutputError(
            f"{output}: no {SUCCESS} marker, so no pipeline run has committed it (a run "
            f"failed, is still running, or is being committed); {_rerun(output)}"
        )
    try:
        text = storage.read_text(marker)
    except (OSError, UnicodeDecodeError) as e:  # a folder of that name, or not text
        raise PipelineOutputError(
            f"{marker}: not a commit manifest ({type(e).__name__}); {_rerun(output)}"
        ) from None
    try:
        return Manifest.from_dict(output, json.loads(text))
    except ValueError as e:
        what = "is empty (written by an older version of the pipeline)" if not text else str(e)
        raise PipelineOutputError(
            f"{marker}: not a commit manifest that this version reads: {what}; {_rerun(output)}"
        ) from None


def require_complete(pipeline_output: str) -> Manifest:
    """Refuses a pipeline output that no run committed; returns its manifest.

    Read the manifest once, when a stage starts, and take every file list from it: a rerun
    that commits under a reader cannot then mix two runs' shards into one read (the new
    run's shards have other names; the old ones are deleted, and reading them fails).

    Raises:
      PipelineOutputError: OUTPUT does not exist, has no `_SUCCESS`, its `_SUCCESS` is not a
        manifest, or a file it lists is missing or has another size.
    """
    manifest = read_manifest(pipeline_output)
    present = storage.list_files(manifest.output)
    changed = sorted(
        f
        for f, size in manifest.files.items()
        if f not in present or (present[f] != size and f not in RENDERED_AFTER_COMMIT)
    )
    if changed:
        raise PipelineOutputError(
            f"{manifest.output}: {len(changed)} file(s) listed in {SUCCESS} are missing or "
            f"changed since run {manifest.run_id} committed them (first: {changed[0]}); "
            + _rerun(manifest.output)
        )
    if not manifest.crc32c:
        LOG.warning(
            "%s: its %s (written by an older version) records no checksums: its files are "
            "checked by size only; %s to have them checked by content",
            manifest.output,
            SUCCESS,
            _rerun(manifest.output).replace(" before planning or training", ""),
        )
        return manifest
    for relative in manifest.verified_files():
        _verify(manifest, relative)
    return manifest


def _verify(manifest: Manifest, relative: str) -> None:
    """Refuses a file whose CRC32C differs from the one its manifest records."""
    path = join(manifest.output, relative)
    actual = storage.crc32c(path)
    if actual != manifest.crc32c[relative]:
        raise PipelineOutputError(
            f"{path}: its content changed since run {manifest.run_id} committed it (crc32c "
            f"{actual}, {SUCCESS} records {manifest.crc32c[relative]}); " + _rerun(manifest.output)
        )


def damaged_files(manifest: Manifest, relatives: list[str] | None = None) -> list[str]:
    """The full paths of the files (default: all the manifest lists) whose content no longer
    has the CRC32C the manifest records: after a read failed, to name the file to blame.
    Empty for a manifest without checksums."""
    if not manifest.crc32c:
        return []
    return [
        join(manifest.output, relative)
        for relative in (relatives if relatives is not None else list(manifest.files))
        if storage.exists(join(manifest.output, relative))
        and storage.crc32c(join(manifest.output, relative)) != manifest.crc32c[relative]
    ]


def describe_damage(pipeline_output: str) -> str | None:
    """After a read of the data shards failed as damaged: the shard(s) whose content is not
    what the commit recorded, as a one-line message; None when none can be named."""
    try:
        manifest = read_manifest(pipeline_output)
        shards = [f for split in SPLITS for f in manifest.data.get(split, [])]
        damaged = damaged_files(manifest, shards)
    except Exception:  # noqa: BLE001 - naming the file is a courtesy on the error path
        return None
    if not damaged:
        return None
    more = f" ({len(damaged) - 1} more)" if len(damaged) > 1 else ""
    return (
        f"{damaged[0]}{more}: the data shard is damaged (its crc32c differs from the one "
        f"{SUCCESS} records); {_rerun(manifest.output)}"
    )


def data_files(pipeline_output: str, split: str) -> list[str]:
    """The transformed TFRecord files of a split ("train", "validation" or "eval") that the
    commit manifest lists, sorted; an empty list for a validation split the run did not write
    (`[split] validation_fraction` 0, or an output from before the split existed). Reads and
    checks the manifest: a stage that needs several lists should call `require_complete` once
    and ask its `Manifest`."""
    return require_complete(pipeline_output).data_files(split)
