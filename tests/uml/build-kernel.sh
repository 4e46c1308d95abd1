#!/bin/sh
# Build the user-mode Linux 6.1 kernel that farm's cgroup v2 tests boot, from Debian's
# linux-source-6.1 with xstate.patch, into $1 (a cache folder outside the clone). Debian's own
# linux.uml (6.1) cannot start a process on a host whose XSAVE area is larger than 2696 bytes
# (AMX: "ptrace set fp regs failed, errno = 14"); the patch sizes it from the host.
set -eu
out=$1
here=$(cd "$(dirname "$0")" && pwd)
tarball=/usr/src/linux-source-6.1.tar.xz
[ -r "$tarball" ] || { echo "no $tarball: apt-get install linux-source-6.1 flex bison bc" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xf "$tarball" -C "$work"
cd "$work"/linux-source-6.1
patch -s -p1 < "$here/xstate.patch"
make -s ARCH=um x86_64_defconfig
scripts/kconfig/merge_config.sh -m -O . .config "$here/kernel.config" >/dev/null
make -s ARCH=um olddefconfig
make -s ARCH=um -j"$(nproc)" linux
for option in $(grep '^CONFIG_.*=y' "$here/kernel.config" | cut -d= -f1); do
  grep -q "^$option=y" .config || { echo "kernel config lacks $option" >&2; exit 1; }
done
mkdir -p "$out"
cp linux "$out/linux.uml.tmp" && mv "$out/linux.uml.tmp" "$out/linux.uml"
cp .config "$out/config"
