"""A Google Cloud Storage emulator on localhost, and the settings that keep every client on it.

`GcsEmulator()` starts gcp-storage-emulator (an in-memory JSON-API server; see
gcs_emulator_server.py for the headers it adds) on a free local port and returns the environment that points each client jaxtalk uses at it, through the
clients' documented settings:

  gcsfs (etils.epath, jaxtalk.fs)   STORAGE_EMULATOR_HOST, FSSPEC_GCS_TOKEN=anon (no credential
                                    discovery), GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false (the
                                    bucket-type lookup is a gRPC call the emulator does not serve)
  tensorstore (orbax's arrays)      TENSORSTORE_GCS_HTTP_URL; its credential search finds no file
                                    (CLOUDSDK_CONFIG is an empty directory) and the metadata
                                    server it would ask next is GCE_METADATA_ROOT, a closed
                                    localhost port, so it falls back to anonymous requests
  google-auth                       GCE_METADATA_HOST / GCE_METADATA_IP the same closed port,
                                    NO_GCE_CHECK=true
  anything honouring proxies        HTTP(S)_PROXY a closed localhost port, NO_PROXY localhost:
                                    a request to any other host fails instead of leaving

so nothing in a test reaches a metadata server or a remote host.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_environment(url: str, config_dir: str) -> dict[str, str]:
    closed = f"127.0.0.1:{free_port()}"  # nothing listens here
    return {
        "STORAGE_EMULATOR_HOST": url,
        "TENSORSTORE_GCS_HTTP_URL": url,
        "FSSPEC_GCS_TOKEN": "anon",
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "CLOUDSDK_CONFIG": config_dir,
        "GOOGLE_APPLICATION_CREDENTIALS": "",
        "GOOGLE_CLOUD_PROJECT": "jaxtalk-test",
        "GCE_METADATA_ROOT": closed,
        "GCE_METADATA_HOST": closed,
        "GCE_METADATA_IP": closed,
        "NO_GCE_CHECK": "true",
        "HTTP_PROXY": f"http://{closed}",
        "HTTPS_PROXY": f"http://{closed}",
        "http_proxy": f"http://{closed}",
        "https_proxy": f"http://{closed}",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


class GcsEmulator:
    def __init__(self, bucket: str = "jaxtalk-test"):
        self.bucket = bucket
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._config_dir = tempfile.mkdtemp(prefix="gcloud_empty_")
        self.env = client_environment(self.url, self._config_dir)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.remote.gcs_emulator_server", "--port", str(self.port),
             "--bucket", bucket],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, **self.env, "PYTHONPATH": REPO},
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/storage/v1/b/{bucket}", timeout=1).read()
                break
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the storage emulator did not start")
                time.sleep(0.2)

    def apply(self, monkeypatch) -> None:
        """Points this process's clients at the emulator (fsspec read its environment when
        it was imported, so its config is set directly too)."""
        import fsspec.config

        for key, value in self.env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setitem(fsspec.config.conf, "gcs", {"token": "anon"})
        fsspec.AbstractFileSystem.clear_instance_cache()
        try:
            import gcsfs

            gcsfs.GCSFileSystem.clear_instance_cache()
        except ImportError:
            pass

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)
        shutil.rmtree(self._config_dir, ignore_errors=True)
