"""How a pipeline run replaces OUTPUT: staged beside it, committed by a manifest written last.

The same protocol on a local disk and on Cloud Storage, where there are no directories and
no atomic rename of many objects:

1. `begin`: before Beam starts, refuse an existing OUTPUT without `--overwrite` (prefix-aware:
   any object under `OUTPUT/` counts), and give the run an id and a staging prefix beside
   OUTPUT, `OUTPUT.incomplete-<run id>`. Everything the run writes goes there.
2. `commit`, once everything is written: delete the staging `.work/`, list the staging files
   (the manifest), refuse again if OUTPUT appeared without `--overwrite`, then
   a. invalidate the old commit: delete `OUTPUT/_SUCCESS` first;
   b. delete the files of the old OUTPUT, each of which was checked to be ours: those its
      manifest lists (and the planner's plan and report), or, without a readable manifest,
      those whose names a run writes; a file that is not ours is never deleted (the run is
      refused, naming it, before Beam starts and again here);
   c. move the staging files into OUTPUT (one rename of the directory locally; a copy and a
      delete of each object on Cloud Storage), the data shards renamed
      `data/<split>-<run id>-SSSSS-of-NNNNN.tfrecord.gz`;
   d. check that OUTPUT holds exactly the listed files with their sizes;
   e. write `OUTPUT/_SUCCESS` LAST: the manifest (run id, time, every file with its size and
      its CRC32C, the shards of each split). The shards' CRC32Cs were computed as they were
      written (pipeline/sinks.py); the other files are read once for theirs before step 2a.
      Readers read exactly what it lists, and check the small files' content
      (`artifacts.require_complete`).
3. A run that fails before step 2a leaves the previous OUTPUT untouched and committed:
   `abandon` deletes its staging prefix (best effort). A run over `--max-rejected-fraction`
   commits nothing and keeps its staging prefix with `rejected/`, `stats.json` and
   `report.html` for inspection (`keep_for_inspection`).

The window, honestly: from step 2a until step 2e OUTPUT holds no commit. A reader that starts
then is refused (no `_SUCCESS`). A reader that read the old manifest earlier cannot read the
new run's shards by mistake, because they carry the new run id in their names, and fails
loudly when it opens one of its deleted shards (files with fixed names, such as `transform_fn/` or
`stats.json`, are replaced in place, so such a reader must not open them after step 2b). If
the commit itself fails or the process dies inside the window, OUTPUT is left without
`_SUCCESS` (the old run's files gone, the new run's partly moved) and must be rewritten by a
rerun with `--overwrite`; a killed run also leaves its `OUTPUT.incomplete-<run id>` prefix
behind, to be deleted by hand (the next run of OUTPUT names it: `left_behind`). The window
lasts as long as the deletes and the copies: on Cloud Storage, batches of 100 objects per
request. Two runs must not commit to the same OUTPUT at the same time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import signal
import threading
import time
import uuid

from common import artifacts, process, storage
from pipeline.input_files import InputError

LOG = logging.getLogger("pipeline")

STAGING_MARK = ".incomplete-"
KEPT_FOR_INSPECTION = (artifacts.REJECTED_DIR, artifacts.STATS, artifacts.REPORT)


class CommitError(RuntimeError):
    """The commit failed after the old OUTPUT was invalidated: OUTPUT holds no commit."""


@dataclasses.dataclass(frozen=True)
class Run:
    """One pipeline run's identity and where it writes before the commit.

    Attributes:
      output: OUTPUT, without a trailing separator.
      run_id: unique per run: UTC time of the start and 8 random hex digits.
      staging: `OUTPUT.incomplete-<run id>`, beside OUTPUT, where the run writes.
    """

    output: str
    run_id: str
    staging: str

    @property
    def work_dir(self) -> str:
        """Intermediate files of the run (deleted before the commit)."""
        return artifacts.join(self.staging, artifacts.WORK_DIR)


def new_run_id() -> str:
    """A run id that sorts by start time: `YYYYmmddTHHMMSSZ-` and 8 random hex digits."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


OWN_FILES = frozenset(
    {
        artifacts.SUCCESS,
        artifacts.STATS,
        artifacts.CONFIG,
        artifacts.PLAN,
        artifacts.REPORT,
        "metadata/schema.pbtxt",
        "transformed_metadata/schema.pbtxt",
        "transformed_metadata/asset_map",
        "transform_fn/saved_model.pb",
        "transform_fn/fingerprint.pb",
        "transform_fn/variables/variables.index",
        artifacts.SCHEMA,
        *(f"{artifacts.STATISTICS_DIR}/{split}.pb" for split in artifacts.SPLITS),
    }
)
"""The files with fixed names that a pipeline run (and the planner) writes into OUTPUT."""
WRITTEN_AFTER_COMMIT = frozenset({artifacts.PLAN, artifacts.REPORT})
"""Files the planner writes into a committed OUTPUT, which its manifest may not list."""


def normalize_output(output: str) -> str:
    """OUTPUT without a trailing separator; a local path made absolute with its links
    resolved, so that the staging prefix is really beside it (`.` or a link to a directory
    would otherwise put it inside, or make the old tree undeletable)."""
    if storage.is_remote(output):
        return output.rstrip("/")
    import os

    return os.path.realpath(os.path.abspath(output))


MARKERS = (artifacts.SUCCESS, artifacts.CONFIG, artifacts.STATS)
"""Files of which a pipeline output (or one a failed commit left half-written) has one."""


def _own_name(relative: str) -> bool:
    """Whether a file under OUTPUT has a name a pipeline run or the planner writes there."""
    if relative in OWN_FILES:
        return True
    directory, _, name = relative.rpartition("/")
    if directory == artifacts.DATA_DIR:
        return any(artifacts.is_data_shard(relative, split) for split in artifacts.SPLITS)
    if directory == artifacts.REJECTED_DIR:
        return name.startswith("rejected-") and name.endswith(".jsonl")
    if directory == "transform_fn/variables":
        return name.startswith("variables.data-")
    return directory == "transform_fn/assets"  # the vocabularies, named after the config's


def _ours(output: str, present: dict[str, int]) -> set[str]:
    """The files under OUTPUT that a pipeline run of ours wrote.

    With a committed manifest, exactly the files it lists (and the planner's); without one
    (a commit that failed half-way), the files whose names a run writes.
    """
    if artifacts.SUCCESS in present:
        try:
            manifest = artifacts.read_manifest(output)
        except artifacts.PipelineOutputError:
            pass  # damaged or from an older version: judged by the names, below
        else:
            listed = set(manifest.files) | {artifacts.SUCCESS} | WRITTEN_AFTER_COMMIT
            return listed & set(present)
    return {f for f in present if _own_name(f)}


def _written_by_a_run(output: str, relative: str) -> bool:
    """Whether OUTPUT's config.json or stats.json is one a pipeline run wrote: a config that
    our validator reads, statistics with the rows a run counts."""
    import json

    from common.config import ConfigError, config_from_dict

    try:
        value = json.loads(storage.read_text(storage.join(output, relative)))
        if relative == artifacts.CONFIG:
            config_from_dict(value)
            return True
        return {"read", "train", "eval", "rejected"} <= set(value.get("rows", {}))
    except (ValueError, TypeError, KeyError, AttributeError, ConfigError, OSError):
        return False


def _check_replaceable(output: str, inputs: list[str]) -> list[str]:
    """Refuses to replace an OUTPUT that is not a pipeline output or holds the inputs.

    Returns:
      The files under OUTPUT (relative paths), every one of them ours, to be replaced.
    """
    if storage.is_file(output):
        raise InputError(
            f"--output {output} is a file, not a folder: --overwrite replaces only a pipeline "
            "output; choose another --output"
        )
    present = storage.list_files(output)
    ours = _ours(output, present)
    foreign = sorted(f for f in present if f not in ours)
    if present and not foreign and not any(marker in present for marker in MARKERS):
        foreign = [f"(none of {', '.join(MARKERS)}: not a pipeline output)"]
    if present and not foreign and artifacts.SUCCESS not in ours:
        # No manifest of ours: names alone prove nothing (a user's own config.json), so the
        # files that say what they are must say it in our format.
        telling = [f for f in (artifacts.CONFIG, artifacts.STATS) if f in present]
        foreign = [f for f in telling if not _written_by_a_run(output, f)]
        if not telling:
            foreign = [f"(no {artifacts.CONFIG} or {artifacts.STATS} of a run)"]
    if foreign:
        raise InputError(
            f"--output {output} holds files a pipeline run does not write (first: {foreign[0]}): "
            "--overwrite replaces only a pipeline output, and deletes no other file; move it "
            "or choose another --output"
        )
    prefix = storage.join(output, "")
    inside = [path for path in inputs if normalize_output(path).startswith(prefix)]
    if inside:
        raise InputError(
            f"--output {output} holds the input {inside[0]}: replacing it would delete the "
            "data being read; choose another --output"
        )
    return sorted(present)


def _check_writable(staging: str) -> None:
    """Writes and deletes one small file where the run will stage, before Beam starts."""
    probe = storage.join(staging, artifacts.WORK_DIR, "probe")
    try:
        storage.write_text(probe, "")
        storage.delete_tree(staging)
    except Exception as e:
        raise InputError(f"--output: cannot write beside it, at {staging}: {e}") from None
    except BaseException:  # stopped here (Ctrl-C, SIGTERM): leave nothing
        storage.delete_tree(staging)
        raise


def check_output(output: str, overwrite: bool, inputs: list[str] | None = None) -> None:
    """Refuses an unusable OUTPUT, or an existing one without --overwrite.

    Raises:
      InputError: OUTPUT has glob characters, is a bucket's root, or exists (a file or any
        object under `OUTPUT/`) and `overwrite` is False, or with `overwrite` holds files a
        pipeline run does not write or one of the `inputs`.
    """
    if any(c in output for c in storage.GLOB_CHARACTERS):
        raise InputError(f"--output {output}: choose a name without *, ? or [")
    if storage.is_remote(output) and "/" not in output.split("://", 1)[1].strip("/"):
        raise InputError(
            f"--output {output}: give a folder inside the bucket, such as {output}/clicks "
            "(the run is staged beside OUTPUT)"
        )
    if storage.exists(output):
        if not overwrite:
            raise InputError(f"--output {output} already exists; pass --overwrite to replace it")
        _check_replaceable(output, inputs or [])


def begin(output: str, overwrite: bool, inputs: list[str] | None = None) -> Run:
    """Checks OUTPUT (before Beam starts) and names the run and its staging prefix.

    Args:
      output: --output.
      overwrite: --overwrite.
      inputs: the input files, which OUTPUT must not hold.

    Raises:
      InputError: see `check_output`; or nothing can be written beside OUTPUT.
    """
    if not output.strip():
        raise InputError("--output is empty; name the folder the run writes")
    output = normalize_output(output)
    check_output(output, overwrite, inputs)
    run_id = new_run_id()
    staging = f"{output}{STAGING_MARK}{run_id}"
    _check_writable(staging)
    left = left_behind(output)
    if left:
        LOG.warning(
            "%s: %d staging folder(s) of earlier runs lie beside it, with their work "
            "directories, left by runs that were killed before they could delete them: %s. "
            "Delete them, unless a run is still writing there",
            output,
            len(left),
            ", ".join(left),
        )
    return Run(output=output, run_id=run_id, staging=staging)


def left_behind(output: str) -> list[str]:
    """The staging prefixes `OUTPUT.incomplete-<run id>` that lie beside OUTPUT now with a
    work directory in them: a run deletes its own, unless it was killed (SIGKILL, a machine
    lost) before it could. (One kept for its rejected rows has no work directory left.)"""
    if storage.is_remote(output):
        from apache_beam.io.filesystems import FileSystems

        (result,) = FileSystems.match([output + STAGING_MARK + "**"])
        mark = len(output) + len(STAGING_MARK)
        prefixes = set()
        for metadata in result.metadata_list:
            end = metadata.path.find("/", mark)
            if end > 0 and metadata.path[end:].startswith("/" + artifacts.WORK_DIR + "/"):
                prefixes.add(metadata.path[:end])
        return sorted(prefixes)
    import os

    parent, name = os.path.split(os.path.abspath(output))
    try:
        entries = os.listdir(parent)
    except OSError:
        return []
    return sorted(
        os.path.join(os.path.dirname(output), entry)
        for entry in entries
        if entry.startswith(name + STAGING_MARK)
        and os.path.isdir(os.path.join(parent, entry, artifacts.WORK_DIR))
    )


def _committed_name(run_id: str):
    """Data shards get the run id in their names; every other file keeps its name."""

    def rename(relative: str) -> str:
        for split in artifacts.SPLITS:
            if artifacts.is_data_shard(relative, split):
                directory, _, name = relative.rpartition("/")
                return f"{directory}/{split}-{run_id}-{name[len(split) + 1 :]}"
        return relative

    return rename


def commit(run: Run, overwrite: bool) -> artifacts.Manifest:
    """Replaces OUTPUT with the run's staging files and writes the manifest last.

    Returns:
      The manifest written as `OUTPUT/_SUCCESS`.

    Raises:
      InputError: OUTPUT appeared while the run ran and `overwrite` is False (nothing was
        touched).
      CommitError: a step after the old commit was invalidated failed; OUTPUT holds no
        commit and must be rewritten by a rerun.
    """
    output = run.output
    written = _checksums_written(run)
    storage.delete_tree(run.work_dir)
    rename = _committed_name(run.run_id)
    staged = storage.list_files(run.staging)
    if not staged:
        raise RuntimeError(f"{run.staging}: the run wrote no files; nothing to commit")
    files = {rename(relative): size for relative, size in staged.items()}
    # The shards' checksums were computed as they were written; the other files (the
    # transform graph, the statistics, the rejected rows: small next to the shards) are
    # read once here.
    crc32c = {
        rename(relative): written.get(relative)
        or storage.crc32c(artifacts.join(run.staging, *relative.split("/")))
        for relative in staged
    }
    if storage.exists(output) and not overwrite:
        raise InputError(f"--output {output} appeared while the pipeline ran; not replaced")
    replaced: list[str] = []
    if storage.exists(output):
        # Again: files may have been added while the run ran.
        replaced = _check_replaceable(output, [])
    with _stops_held():
        # A stop asked before the window, even one a finalizer swallowed: nothing replaced.
        process.raise_if_stopped()
        manifest = _replace(run, output, files, crc32c, replaced, rename)
    LOG.info("Committed run %s as %s (%d files)", run.run_id, output, len(files))
    return manifest


@contextlib.contextmanager
def _stops_held():
    """Ctrl-C and SIGTERM wait until the commit is done: stopped inside it, the old OUTPUT
    would be gone and the new one not there. The commit then completes, and says so."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def hold(signum, frame):
        received.append(signum)
        LOG.warning("Asked to stop while committing: stopping once the commit is done")

    held = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in held.items():
            signal.signal(signum, handler)


def _replace(run, output, files, crc32c, replaced, rename) -> artifacts.Manifest:
    """The commit's window: the old OUTPUT invalidated and deleted, the staged files moved in,
    the manifest written last."""
    try:
        if storage.exists(output):
            LOG.info("Replacing the existing %s (--overwrite)", output)
            storage.delete_files([artifacts.join(output, artifacts.SUCCESS)])
            # Exactly the files checked: one that appeared since stays, and fails the move.
            storage.delete_files([artifacts.join(output, *f.split("/")) for f in replaced])
            if not storage.is_remote(output):
                _remove_empty_directories(output, including_root=True)
        storage.move_tree(run.staging, output, rename)
        moved = storage.list_files(output)
        if moved != files:
            wrong = sorted(set(moved.items()) ^ set(files.items()))
            raise RuntimeError(f"{output} does not hold the files staged (first: {wrong[0]})")
        manifest = artifacts.Manifest.of_files(
            output, run.run_id, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), files, crc32c
        )
        storage.write_text(
            artifacts.join(output, artifacts.SUCCESS),
            json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n",
        )
    except Exception as e:
        raise CommitError(
            f"committing run {run.run_id} into {output} failed after the previous output was "
            f"invalidated ({type(e).__name__}: {e}); {output} holds no commit now: rerun the "
            "pipeline with --overwrite"
        ) from e
    return manifest


def _checksums_written(run: Run) -> dict[str, str]:
    """The CRC32Cs the data shards' writer recorded (`sinks.WriteTFRecordLists`), by the
    shards' paths relative to the staging prefix."""
    directory = artifacts.join(run.work_dir, artifacts.CHECKSUMS_DIR)
    return {
        f"{artifacts.DATA_DIR}/{name}": storage.read_text(artifacts.join(directory, name))
        for name in storage.list_files(directory)
    }


def abandon(run: Run) -> None:
    """Deletes the run's staging prefix, best effort: a failure is logged, not raised."""
    try:
        storage.delete_tree(run.staging)
    except Exception as e:  # noqa: BLE001 - cleaning up after another error must not hide it
        LOG.warning("Could not delete %s (%s); delete it by hand", run.staging, e)


def keep_for_inspection(run: Run) -> str:
    """Keeps only `rejected/`, `stats.json` and `report.html` of the staging prefix.

    Returns:
      The staging prefix, which the caller names in its error.
    """
    doomed = [
        artifacts.join(run.staging, relative)
        for relative in storage.list_files(run.staging)
        if relative.split("/", 1)[0] not in KEPT_FOR_INSPECTION
    ]
    storage.delete_files(doomed)
    if not storage.is_remote(run.staging):
        _remove_empty_directories(run.staging)
    return run.staging


def _remove_empty_directories(root: str, including_root: bool = False) -> None:
    import os

    for directory, _, _ in sorted(os.walk(root), key=lambda w: -len(w[0])):
        if (directory != root or including_root) and not os.listdir(directory):
            os.rmdir(directory)
