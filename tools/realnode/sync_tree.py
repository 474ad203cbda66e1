#!/usr/bin/env python3
"""sync_tree.py FROM_DIR TO_DIR [KEEP...] -- make TO_DIR hold the files of FROM_DIR, by content.

A file whose content (and mode) is already the same in TO_DIR is left alone, keeping its mtime; a
changed or new file is written, so its mtime is now; a file of TO_DIR that FROM_DIR lacks is
removed, except under the top-level directories named KEEP and under any `_build` or `deps`
directory. Build tools that decide by mtime (cargo, Mix) working in TO_DIR therefore rebuild
exactly what changed, whatever the mtimes in FROM_DIR were (a git archive, a copy, a checkout
that went back and forth). Used by tools/realnode/image.sh.
"""
import filecmp
import os
import shutil
import sys


def main(argv):
    if len(argv) < 2:
        raise SystemExit(__doc__)
    src, dst, keep = argv[0], argv[1], set(argv[2:])
    changed = removed = 0
    wanted = set()
    for dirpath, _dirs, files in os.walk(src):
        for name in files:
            new = os.path.join(dirpath, name)
            rel = os.path.relpath(new, src)
            wanted.add(rel)
            old = os.path.join(dst, rel)
            mode = os.stat(new).st_mode & 0o7777
            if os.path.isfile(old) and not os.path.islink(old) and filecmp.cmp(old, new, shallow=False):
                if os.stat(old).st_mode & 0o7777 != mode:
                    os.chmod(old, mode)
                continue
            os.makedirs(os.path.dirname(old), exist_ok=True)
            if os.path.lexists(old):
                if os.path.isdir(old) and not os.path.islink(old):
                    shutil.rmtree(old)
                else:
                    os.remove(old)
            shutil.copyfile(new, old)
            os.chmod(old, mode)
            changed += 1
    for dirpath, dirs, files in os.walk(dst, topdown=True):
        rel_dir = os.path.relpath(dirpath, dst)
        dirs[:] = [d for d in dirs
                   if d not in ("_build", "deps") and not (rel_dir == "." and d in keep)]
        for name in files:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel not in wanted:
                os.remove(os.path.join(dirpath, name))
                removed += 1
    # Directories left empty by removals.
    for dirpath, _dirs, _files in os.walk(dst, topdown=False):
        parts = os.path.relpath(dirpath, dst).split(os.sep)
        if parts != ["."] and parts[0] not in keep and "_build" not in parts \
                and "deps" not in parts and not os.listdir(dirpath):
            os.rmdir(dirpath)
    print("    sources: %d changed or new, %d removed, %d unchanged"
          % (changed, removed, len(wanted) - changed), file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
