"""jaxtalk download: fetch a release's public files, check them, and import the release.

Each file is fetched from the URL its release lists (`jaxtalk download --list`), resuming
an interrupted download (run the same command again), and must match the listed size and
SHA-256 before it is used; then the release is imported as `jaxtalk import` does, to
`<weights dir>/<release>.safetensors` (or --out). Offline: give the files by path
(--checkpoint, --backbone) and they are checked and imported without any network access.

Examples:
  jaxtalk download --release=inception_fid
  jaxtalk download --release=lpips_alex --dir=/data/released
  jaxtalk download --release=vgg16 --checkpoint=/mnt/models/vgg16-397923af.pth   # offline
"""

from absl import flags

from jaxtalk.errors import InputError

_RELEASE = flags.DEFINE_string("release", None, "release name (see --list)")
_DIR = flags.DEFINE_string(
    "dir", None, "where downloaded files go (default $JAXTALK_CACHE/downloads/<release>)"
)
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "offline: the release's main file")
_BACKBONE = flags.DEFINE_string("backbone", None, "offline, lpips_*: the torchvision backbone")
_OUT = flags.DEFINE_string("out", None, "output .safetensors (default: as jaxtalk import)")
_WEIGHTS_DIR = flags.DEFINE_string("weights_dir", None, "directory for the default output")
_LIST = flags.DEFINE_bool("list", False, "list the releases' files: URL, size, SHA-256")


def main(argv):
    from jaxtalk.convert import download, releases

    if len(argv) > 1:
        raise InputError(f"unexpected arguments {argv[1:]}")
    if _LIST.value:
        for spec in releases.releases().values():
            print(spec.name)
            for f in spec.files or ():
                size = "size unlisted" if f.size is None else f"{f.size} bytes"
                print(f"  --{f.option}: {f.url}\n    {size}, sha256 {f.sha256 or 'not pinned'}")
            if not spec.files:
                print(f"  no public download listed: {spec.source}")
        return
    if not _RELEASE.value:
        raise InputError("--release is required (see --list)")
    given = {"checkpoint": _CHECKPOINT.value, "backbone": _BACKBONE.value}
    path = download.download_release(
        _RELEASE.value,
        _DIR.value,
        files={k: v for k, v in given.items() if v},
        output=_OUT.value,
        weights_dir=_WEIGHTS_DIR.value,
    )
    print(f"downloaded, checked and imported {_RELEASE.value} -> {path}")
