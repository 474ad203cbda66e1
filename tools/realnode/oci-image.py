#!/usr/bin/env python3
"""Writes a one-layer OCI image archive (an OCI image layout in a tar) that
`ctr -n k8s.io images import` accepts, from a root file system directory. No registry, no Docker.

  oci-image.py --rootfs DIR --ref NAME:TAG --out IMAGE.tar
               [--entrypoint ARG]... [--cmd ARG]... [--env K=V]... [--workdir DIR] [--user UID]

The layer is an uncompressed tar of DIR (numeric owners, xattrs, names sorted): the same DIR
gives the same layer digest. The config's `created` is $SOURCE_DATE_EPOCH (default 0), so the
same inputs give the same image digest. Prints `<ref> <out> <layer bytes>` on stdout.
"""
import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rootfs", required=True)
    p.add_argument("--ref", required=True, help="image name, e.g. flame-k8s.local/app:1")
    p.add_argument("--out", required=True)
    p.add_argument("--entrypoint", action="append", default=[])
    p.add_argument("--cmd", action="append", default=[])
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--workdir", default="/")
    p.add_argument("--user", default="")
    p.add_argument("--arch", default="amd64")
    a = p.parse_args()

    if not os.path.isdir(a.rootfs):
        sys.exit(f"oci-image.py: {a.rootfs} is not a directory")
    out = os.path.abspath(a.out)
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))

    tmp = tempfile.mkdtemp(prefix=".oci-image-", dir=os.path.dirname(out))
    try:
        layer = os.path.join(tmp, "layer.tar")
        subprocess.check_call(["tar", "-C", a.rootfs, "--sort=name", "--numeric-owner",
                               "--xattrs", "--xattrs-include=*",
                               # POSIX headers would record atime and ctime: not content.
                               "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
                               "-cf", layer, "."])
        layer_sha, layer_size = sha256_file(layer), os.path.getsize(layer)

        env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + a.env
        image_config = {"Env": env, "WorkingDir": a.workdir}
        if a.entrypoint:
            image_config["Entrypoint"] = a.entrypoint
        if a.cmd:
            image_config["Cmd"] = a.cmd
        if a.user:
            image_config["User"] = a.user
        config = {
            "architecture": a.arch, "os": "linux", "created": created, "config": image_config,
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + layer_sha]},
            "history": [{"created": created, "created_by": "tools/realnode/oci-image.py"}],
        }
        config_bytes = json.dumps(config, sort_keys=True).encode()
        config_sha = hashlib.sha256(config_bytes).hexdigest()
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": "sha256:" + config_sha, "size": len(config_bytes)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": "sha256:" + layer_sha, "size": layer_size}],
        }
        manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
        manifest_sha = hashlib.sha256(manifest_bytes).hexdigest()
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": "sha256:" + manifest_sha, "size": len(manifest_bytes),
                "platform": {"architecture": a.arch, "os": "linux"},
                "annotations": {"io.containerd.image.name": a.ref,
                                "org.opencontainers.image.ref.name": a.ref},
            }],
        }

        partial = os.path.join(tmp, "image.tar")
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as t:
            def add(name, data):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), epoch, 0o644
                t.addfile(info, io.BytesIO(data))

            add("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
            add("index.json", json.dumps(index, sort_keys=True).encode())
            add("blobs/sha256/" + config_sha, config_bytes)
            add("blobs/sha256/" + manifest_sha, manifest_bytes)
            info = t.gettarinfo(layer, "blobs/sha256/" + layer_sha)
            info.mtime, info.uid, info.gid, info.uname, info.gname = epoch, 0, 0, "", ""
            with open(layer, "rb") as f:
                t.addfile(info, f)
        os.replace(partial, out)
    finally:
        for name in ("layer.tar", "image.tar"):
            try:
                os.remove(os.path.join(tmp, name))
            except FileNotFoundError:
                pass
        os.rmdir(tmp)
    print(a.ref, out, layer_size)


if __name__ == "__main__":
    main()
