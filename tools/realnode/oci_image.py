#!/usr/bin/env python3
"""Pack a root filesystem directory into a one-layer OCI image archive, without Docker or a registry.

    oci_image.py [options] ROOTFS_DIR IMAGE_REF OUT.tar [ENTRYPOINT...]

    oci_image.py --user 1000:1000 --workdir /app --env LANG=C.UTF-8 --cmd start \\
        rootfs/ docker.io/library/flame-demo:0123abcd4567 /tmp/flame-demo.tar /app/bin/flame_demo
    oci_image.py pause-rootfs/ docker.io/library/realnode-pause:1 /tmp/pause.tar /pause

    ctr -n k8s.io images import OUT.tar      # the image is then known as IMAGE_REF

ENTRYPOINT is the image's Entrypoint (a pod's `command` replaces it); `--cmd` gives its Cmd (a
pod's `args` replace it). Without either, Cmd is /bin/sh.

The archive is an OCI image layout (oci-layout, index.json, blobs/sha256/...) with a single
uncompressed layer: GNU tar of ROOTFS_DIR with numeric owners as they are on disk (so chown the
tree first for a non-root image), sorted names, extended attributes. The image name is in the
index's `io.containerd.image.name` and `org.opencontainers.image.ref.name` annotations, which is
what `ctr images import` reads. Writes OUT.tar atomically (a temporary file beside it, then a
rename). Needs GNU tar and Python >= 3.7, nothing else.

Prints progress to stderr and one line to stdout: `IMAGE_REF ABSOLUTE_PATH_OF_OUT.tar`.
"""
import argparse
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time

ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="oci_image.py",
        description="Pack ROOTFS_DIR into a one-layer OCI image archive for `ctr images import`.",
    )
    p.add_argument("rootfs", metavar="ROOTFS_DIR")
    p.add_argument("ref", metavar="IMAGE_REF", help="e.g. docker.io/library/my-app:1")
    p.add_argument("out", metavar="OUT.tar")
    p.add_argument("entrypoint", metavar="ENTRYPOINT", nargs="*",
                   help="the image's Entrypoint (use -- before it if it starts with -)")
    p.add_argument("--cmd", action="append", default=None, metavar="ARG",
                   help="one element of the image's Cmd (repeat for more)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="an image environment variable (repeat); PATH has a default")
    p.add_argument("--workdir", default="/", help="WorkingDir (default /)")
    p.add_argument("--user", default="", help="User, e.g. 1000:1000 (default: root)")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--arch", default=ARCHES.get(platform.machine(), platform.machine()),
                   help="architecture (default: this machine's)")
    args = p.parse_args(argv)
    for kv in args.env + args.label:
        if "=" not in kv:
            p.error("expected NAME=VALUE, got %r" % kv)
    if not os.path.isdir(args.rootfs):
        p.error("ROOTFS_DIR %s is not a directory" % args.rootfs)
    return args


def log(msg):
    print("[oci_image] " + msg, file=sys.stderr, flush=True)


def write_layer(rootfs, path):
    """GNU tar of rootfs into path; returns (sha256 hex, size)."""
    # Reproducible: the same rootfs gives the same layer digest (posix headers without the
    # access and change times that --xattrs would otherwise record).
    cmd = ["tar", "-C", rootfs, "--sort=name", "--numeric-owner", "--xattrs",
           "--xattrs-include=*", "--format=posix",
           "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
           "-cf", "-", "."]
    h = hashlib.sha256()
    size = 0
    with open(path, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
        for chunk in iter(lambda: proc.stdout.read(1 << 20), b""):
            h.update(chunk)
            f.write(chunk)
            size += len(chunk)
        if proc.wait() != 0:
            raise SystemExit("oci_image.py: tar failed (exit %d)" % proc.returncode)
    return h.hexdigest(), size


def env_list(envs):
    names = {kv.split("=", 1)[0] for kv in envs}
    return ([] if "PATH" in names else [DEFAULT_PATH]) + envs


def main(argv):
    args = parse_args(argv)
    out = os.path.abspath(args.out)
    # A fixed date (SOURCE_DATE_EPOCH, else the epoch) so equal inputs give equal archives.
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    out_dir = os.path.dirname(out)
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".oci_image-") as tmp:
        layer = os.path.join(tmp, "layer.tar")
        started = time.monotonic()
        lsha, lsize = write_layer(args.rootfs, layer)
        log("layer sha256:%s, %.1f MiB (%.1f s)"
            % (lsha[:12], lsize / 1048576, time.monotonic() - started))

        image_config = {"Env": env_list(args.env), "WorkingDir": args.workdir}
        if args.entrypoint:
            image_config["Entrypoint"] = args.entrypoint
        if args.cmd is not None:
            image_config["Cmd"] = args.cmd
        elif not args.entrypoint:
            image_config["Cmd"] = ["/bin/sh"]
        if args.user:
            image_config["User"] = args.user
        if args.label:
            image_config["Labels"] = dict(kv.split("=", 1) for kv in args.label)

        config = {
            "created": created,
            "architecture": args.arch,
            "os": "linux",
            "config": image_config,
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + lsha]},
            "history": [{"created": created, "created_by": "oci_image.py " + args.rootfs}],
        }
        cb = json.dumps(config, sort_keys=True).encode()
        csha = hashlib.sha256(cb).hexdigest()
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": "sha256:" + csha, "size": len(cb)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": "sha256:" + lsha, "size": lsize}],
        }
        mb = json.dumps(manifest, sort_keys=True).encode()
        msha = hashlib.sha256(mb).hexdigest()
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": "sha256:" + msha,
                "size": len(mb),
                "platform": {"architecture": args.arch, "os": "linux"},
                "annotations": {"io.containerd.image.name": args.ref,
                                "org.opencontainers.image.ref.name": args.ref},
            }],
        }
        mtime = epoch
        tmp_out = os.path.join(tmp, "image.tar")
        with tarfile.open(tmp_out, "w", format=tarfile.PAX_FORMAT) as t:
            def add_bytes(name, data):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), mtime, 0o644
                t.addfile(info, io.BytesIO(data))

            add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            add_bytes("index.json", json.dumps(index, sort_keys=True).encode())
            add_bytes("blobs/sha256/" + csha, cb)
            add_bytes("blobs/sha256/" + msha, mb)
            info = t.gettarinfo(layer, "blobs/sha256/" + lsha)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode, info.mtime = 0o644, mtime
            with open(layer, "rb") as f:
                t.addfile(info, f)
        os.replace(tmp_out, out)
    log("%s: %s (manifest sha256:%s, %.1f MiB)"
        % (args.ref, out, msha[:12], os.path.getsize(out) / 1048576))
    print(args.ref, out, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
