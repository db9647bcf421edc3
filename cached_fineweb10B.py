"""Download GPT-2-tokenized FineWeb shards from the Hugging Face dataset repo kjj0/fineweb10B-gpt2.

    python cached_fineweb10B.py [N] [--dir PATH]

fetches the val shard fineweb_val_000000.bin and the first N train shards fineweb_train_000001.bin ..
into data/fineweb10B/ next to this script (or PATH). Each train shard holds 100M tokens; N defaults to 8,
and N=9 gives the first 900M training tokens. Shards already present and valid are skipped, a present but
invalid one is fetched again. Every file is downloaded into a temporary folder, its header checked with
train_gpt.read_shard, then moved into place atomically, so the target folder never holds a partial shard.
HF_ENDPOINT points it at a mirror or a local stand-in; when the hub cannot be reached it fails within
seconds with one line on stderr.
"""
import argparse
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ID = "kjj0/fineweb10B-gpt2"
PROG = "cached_fineweb10B.py"


class Fail(Exception):
    """One line for stderr, then exit 1."""


def short(err):
    """Type and first line of an exception's message (huggingface_hub's messages run over several lines)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0].rstrip('.')}" if lines else type(err).__name__


def fetch(name, target, tmp):
    """Download name into tmp, check it is a valid shard, then move it into target atomically."""
    import httpx2
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import (FileMetadataError, LocalEntryNotFoundError, OfflineModeIsEnabled,
                                        RemoteEntryNotFoundError)
    from train_gpt import read_shard, ShardError
    try:
        # One HEAD first, without retries: hf_hub_download retries a failing hub for ~25 s (or minutes on timeouts).
        get_hf_file_metadata(hf_hub_url(REPO_ID, name, repo_type="dataset"), timeout=constants.HF_HUB_ETAG_TIMEOUT)
        path = hf_hub_download(REPO_ID, name, repo_type="dataset", local_dir=tmp)
    except RemoteEntryNotFoundError as e:
        raise Fail(f"{name} is not in the dataset {REPO_ID} on {constants.ENDPOINT}: {short(e)}") from None
    except (httpx2.HTTPError, LocalEntryNotFoundError, FileMetadataError, OfflineModeIsEnabled) as e:
        # connection refused, DNS, timeout, HTTP status (HfHubHTTPError), no hub headers, HF_HUB_OFFLINE=1
        reason = short(e.__cause__ if isinstance(e, LocalEntryNotFoundError) and e.__cause__ else e)
        raise Fail(f"cannot reach the Hugging Face hub ({constants.ENDPOINT}) to fetch {name}: {reason}. Check your "
                   f"connection or HF_ENDPOINT, or copy the shards into {target}/ by hand.") from None
    except OSError as e:  # disk full, permissions
        raise Fail(f"cannot download {name} into {target}: {short(e)}") from None
    try:
        read_shard(path)
    except ShardError as e:
        os.remove(path)
        reason = str(e).removeprefix(f"{path}: ").replace(path, name)  # the message names the temporary path
        raise Fail(f"bad download of {name}, deleted it: {reason}") from None
    os.replace(path, os.path.join(target, name))


def main(argv=None):
    class Parser(argparse.ArgumentParser):
        def error(self, message):  # one line instead of argparse's usage block
            print(f"usage: {PROG} [N] [--dir PATH]  ({message})", file=sys.stderr)
            sys.exit(2)

    def positive(text):
        if not text.isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"N must be a positive integer, not {text!r}")
        return int(text)

    parser = Parser(prog=PROG, description="Download the FineWeb val shard and the first N train shards.")
    parser.add_argument("n", nargs="?", type=positive, default=8, metavar="N", help="train shards, 100M tokens each")
    parser.add_argument("--dir", default=os.path.join(HERE, "data", "fineweb10B"), help="target folder")
    args = parser.parse_args(argv)

    # Fail fast: short timeouts unless the user chose others (huggingface_hub reads them when it is imported).
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "20")
    try:
        import httpx2  # noqa: F401
        import huggingface_hub  # noqa: F401
    except ImportError as e:
        print(f"{PROG}: {e}; it needs huggingface_hub 2.x: pip install -U huggingface_hub", file=sys.stderr)
        return 1
    sys.path.insert(0, HERE)
    from train_gpt import read_shard, ShardError

    names = ["fineweb_val_000000.bin"] + [f"fineweb_train_{i:06d}.bin" for i in range(1, args.n + 1)]
    target = os.path.abspath(args.dir)
    made = not os.path.isdir(target)
    try:
        os.makedirs(target, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".incoming-", dir=target)  # same filesystem, so os.replace is atomic
    except OSError as e:
        print(f"{PROG}: cannot write into {target}: {short(e)}", file=sys.stderr)
        return 1
    try:
        for k, name in enumerate(names, 1):
            path = os.path.join(target, name)
            if os.path.exists(path):
                try:
                    read_shard(path)
                    print(f"[{k}/{len(names)}] {name}: already present and valid, skipped", flush=True)
                    continue
                except ShardError as e:
                    print(f"[{k}/{len(names)}] {name}: present but invalid ({e}), downloading again", flush=True)
            else:
                print(f"[{k}/{len(names)}] {name}", flush=True)
            fetch(name, target, tmp)
    except Fail as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; no partial file was left in {target}", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if made and not os.listdir(target):
            os.rmdir(target)
    print(f"{len(names)} shards in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
