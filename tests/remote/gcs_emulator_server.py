"""Runs gcp-storage-emulator with the object-generation headers real Cloud Storage sends.

    python -m tests.remote.gcs_emulator_server --port 9023 --bucket jaxtalk-test

Cloud Storage answers every media download with `x-goog-generation` and
`x-goog-metageneration`; tensorstore (orbax's array writer) reads the generation from them
and refuses a download without one ("Malformed StorageGeneration"), e.g. when it re-reads an
OCDBT manifest during a checkpoint. The emulator leaves them out, so this launcher wraps its
download handler to add them, then serves in memory as `gcp_storage_emulator start` does.
"""

from __future__ import annotations

import argparse
import threading

from gcp_storage_emulator import server
from gcp_storage_emulator.handlers import objects


def _with_generation_headers(download):
    def handler(request, response, storage, *args, **kwargs):
        download(request, response, storage, *args, **kwargs)
        if response.status.value in (200, 206):
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
            response["x-goog-generation"] = str(obj["generation"])
            response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))

    return handler


def _patch_handlers() -> None:
    original = objects.download
    patched = _with_generation_headers(original)
    objects.download = patched  # objects.get serves ?alt=media through it
    for _, handlers in server.HANDLERS:
        for method, fn in list(handlers.items()):
            if fn is original:
                handlers[method] = patched


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bucket", required=True)
    args = parser.parse_args()
    _patch_handlers()
    emulator = server.create_server(
        args.host, args.port, in_memory=True, default_bucket=args.bucket
    )
    emulator.start()
    threading.Event().wait()  # serve until terminated


if __name__ == "__main__":
    main()
