"""Models, data sets and teachers named by Hugging Face Hub id (`org/name`), resolved to local snapshot folders.

huggingface_hub does the work: `snapshot_download` fetches a repository at a revision into its cache (or finds it
there), honours `HF_HUB_OFFLINE`, `HF_HUB_CACHE` / `HF_HOME` and the user's token, and falls back to the cache when
the Hub cannot be reached. Everything after resolution reads the local folder with `local_files_only=True`, so a run
touches the network only here. The snapshot folder is named by its commit hash, which the manifest records.
"""

from __future__ import annotations

import re
from pathlib import Path

from lftrain.errors import InputError

# org/name, as the Hub spells repository ids (letters, digits, `-`, `_`, `.`; no `..`, no leading `.`)
_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
# Weights of other frameworks and formats a PyTorch run never reads: not downloaded.
FOREIGN_WEIGHTS = ["*.h5", "*.msgpack", "*.ot", "*.onnx", "onnx/*", "openvino/*", "*.tflite", "flax_model*",
                   "tf_model*", "rust_model*", "coreml/*", "*.mlmodel", "*.gguf"]
PICKLE_WEIGHTS = ["*.bin", "*.pt", "*.pth", "*.ckpt"]
# A name ending like a file is a path (a missing file deserves "file not found", not a Hub look-up).
FILE_SUFFIXES = (".csv", ".tsv", ".tab", ".json", ".jsonl", ".ndjson", ".parquet", ".pq", ".gz", ".bz2", ".xz",
                 ".zip", ".txt", ".gguf", ".safetensors", ".bin", ".yaml", ".yml")


class HubError(InputError):
    """A hub id that cannot be resolved: not in the cache while offline, no such repository or revision."""


def parse(spec: str) -> tuple[str, str | None]:
    """`org/name@revision` -> (`org/name`, `revision`); without `@`, the revision is None (the main branch)."""
    repo, sep, revision = spec.partition("@")
    return repo, (revision or None) if sep else None


def is_hub_id(spec: str) -> bool:
    """`org/name` (optionally `@revision`) that is not a local path: a Hub repository id. A local folder of that
    name wins."""
    repo, _ = parse(spec)
    return (bool(_ID.match(repo)) and ".." not in repo and not repo.lower().endswith(FILE_SUFFIXES)
            and not Path(spec).expanduser().exists())


def cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def commit_of(snapshot: Path) -> str:
    """The commit hash a snapshot folder holds (huggingface_hub names the folder by it)."""
    return snapshot.name


def snapshot(repo_id: str, *, revision: str | None = None, repo_type: str = "model", key: str = "model.path",
             allow_pickle: bool = False) -> Path:
    """The local folder of `repo_id` (`org/name`, or `org/name@revision`) at `revision` (default: the main branch),
    downloaded into the Hub cache unless it is there. `key` names the recipe key, for the error messages."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id, pinned = parse(repo_id)
    if pinned and revision and pinned != revision:
        raise HubError(f"{key}: two revisions given ({repo_id}@{pinned} and {revision!r}); keep one")
    revision = revision or pinned
    ignore = FOREIGN_WEIGHTS + ([] if allow_pickle or repo_type != "model" else PICKLE_WEIGHTS)
    kind = "data set" if repo_type == "dataset" else "model"
    at = f" at revision {revision!r}" if revision else ""
    try:
        return Path(snapshot_download(repo_id, repo_type=repo_type, revision=revision, ignore_patterns=ignore))
    except GatedRepoError:
        raise HubError(f"{key}: the {kind} '{repo_id}' is gated: accept its terms on the Hub, then log in "
                       "(`hf auth login`) or set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise HubError(f"{key}: '{repo_id}' is not a local path, and there is no {kind} of that id on the Hub (or it "
                       "is private: log in with `hf auth login` or set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise HubError(f"{key}: the {kind} '{repo_id}' has no revision {revision!r}") from None
    except HFValidationError as exc:
        raise HubError(f"{key}: '{repo_id}' is not a valid Hub id ({exc})") from None
    except (LocalEntryNotFoundError, OSError) as exc:  # offline, or the Hub unreachable, and nothing cached
        raise HubError(_not_cached(repo_id, repo_type, revision, key, kind, at, exc)) from None


def _not_cached(repo_id: str, repo_type: str, revision: str | None, key: str, kind: str, at: str,
                exc: Exception) -> str:
    from huggingface_hub import constants

    why = ("HF_HUB_OFFLINE=1: the Hub is not contacted" if constants.HF_HUB_OFFLINE
           else f"the Hub could not be reached ({type(exc).__name__})")
    folder = f"{repo_type}s--{repo_id.replace('/', '--')}"
    command = "hf download " + repo_id + (" --repo-type dataset" if repo_type == "dataset" else "") + \
        (f" --revision {revision}" if revision else "")
    return (f"{key}: the {kind} '{repo_id}'{at} is not a local path and was not found in the Hugging Face cache "
            f"{cache_dir()} (searched for {folder}/), and {why}. Download it on a machine with network access with "
            f"`{command}` and copy that folder into the cache (or point HF_HUB_CACHE at it), or give a local path")
