#!/usr/bin/env bash
# The kernel matrix: boots Debian's stock kernels under qemu with pagesnap's test
# binaries in an initramfs, runs kernels/suites.txt in each, and writes one row per
# kernel and suite to target/kernel-matrix/results.tsv (kernels/results.sh says
# the format). crates/pagesnap/tests/kernel_matrix.rs asserts on that file, so
# `cargo test` reports the matrix; without the file it skips.
#
#   host:  apt packages ─► vmlinuz (dpkg-deb, .debs cached in target/kernel-matrix/debs)
#          cargo test --workspace --no-run ─► test binaries + their shared libraries ─┐
#          busybox + kernels/init ─────────────────────────────────────────┴► initramfs
#   guest: qemu -accel tcg (nested KVM hangs on CI machines): /init runs each
#          suite between @@suite markers on the serial console, then powers off
#
# Environment (all optional):
#   KERNEL_MATRIX_PACKAGES  apt packages naming the kernels; meta-packages resolve
#                           to today's image (default: Debian 12's 6.1 and 6.12)
#   KERNEL_MATRIX_SUITES    the suite list (default kernels/suites.txt)
#   KERNEL_MATRIX_DIR       output folder (default target/kernel-matrix)
#   KERNEL_MATRIX_TIMEOUT   seconds one kernel may run in all (default 900)
#   KERNEL_MATRIX_SUITE_TIMEOUT  seconds one suite may run in the guest (default 480)
# A missing tool or package is recorded as an `error` row, so the test fails
# with the reason; the script itself exits 0 unless it is misused.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
dir=${KERNEL_MATRIX_DIR:-$repo/target/kernel-matrix}
suites=${KERNEL_MATRIX_SUITES:-$here/suites.txt}
packages=${KERNEL_MATRIX_PACKAGES:-linux-image-amd64 linux-image-6.12-amd64}
boot_timeout=${KERNEL_MATRIX_TIMEOUT:-900}
suite_timeout=${KERNEL_MATRIX_SUITE_TIMEOUT:-480}
results=$dir/results.tsv
mkdir -p "$dir/debs"
rm -f "$results"
printf '# kernel\tsuite\tstatus\tseconds\tdetail\n' >"$results.part"

give_up() {
  printf -- '-\tmatrix\terror\t0\t%s\n' "$*" >>"$results.part"
  mv "$results.part" "$results"
  echo "kernel matrix: $*" >&2
  exit 0
}

# --- tools -------------------------------------------------------------------
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
[ -x /bin/busybox ] || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ] || ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
  apt-get update -qq || give_up "apt-get update failed"
fi
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" \
    >"$dir/apt.log" 2>&1 || give_up "apt-get install ${need[*]} failed: $(tail -n 1 "$dir/apt.log")"
fi

# --- kernels: package name -> vmlinuz ------------------------------------------
kernels=()
for pkg in $packages; do
  # A meta-package depends on the current image; an image package is itself.
  image=$({ apt-cache depends "$pkg" 2>/dev/null || true; } |
    sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1)
  image=${image:-$pkg}
  deb=$(ls "$dir/debs/${image}_"*.deb 2>/dev/null | head -n 1 || true)
  if [ -z "$deb" ]; then
    (cd "$dir/debs" && apt-get download "$image" >"$dir/apt-download.log" 2>&1) ||
      give_up "apt-get download $image failed: $(tail -n 1 "$dir/apt-download.log")"
    deb=$(ls "$dir/debs/${image}_"*.deb | head -n 1)
  fi
  kdir=$dir/${image#linux-image-}
  if ! ls "$kdir"/boot/vmlinuz-* >/dev/null 2>&1; then
    mkdir -p "$kdir"
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$kdir" --wildcards './boot/vmlinuz-*' ||
      give_up "no vmlinuz could be taken out of $deb"
  fi
  kernels+=("$(ls "$kdir"/boot/vmlinuz-* | head -n 1)")
done

# --- binaries ------------------------------------------------------------------
# `name executable` for every artifact with an executable in cargo's JSON.
executables() {
  sed -n 's/.*"target":{[^}]*"name":"\([^"]*\)".*"executable":"\([^"]*\)".*/\1 \2/p'
}
cd "$repo"
# --workspace, as the test command builds them: the same artifacts, built once.
cargo test --workspace --no-run --message-format=json-render-diagnostics >"$dir/tests.json" ||
  give_up "cargo test --no-run failed"
cargo build --release -p pagesnap-cli --message-format=json-render-diagnostics >"$dir/cli.json" ||
  give_up "cargo build of the pagesnap CLI failed"

# --- initramfs -----------------------------------------------------------------
fs=$dir/initramfs
rm -rf "$fs"
mkdir -p "$fs"/{bin,tests,proc,sys,dev,tmp}
install_binary() { # SOURCE DEST: the binary without debug info, and its libraries
  cp "$1" "$2"
  if command -v strip >/dev/null; then strip --strip-debug "$2"; fi
  # A static binary has no libraries: ldd fails, and so does grep.
  { ldd "$1" 2>/dev/null || true; } | { grep -o '/[^ ]*' || true; } | while read -r lib; do
    [ -e "$fs$lib" ] || cp -L --parents "$lib" "$fs"
  done
}
install_binary /bin/busybox "$fs/bin/busybox"
cli=$(executables <"$dir/cli.json" | awk '$1 == "pagesnap" { print $2 }' | tail -n 1)
[ -n "$cli" ] || give_up "no pagesnap executable in cargo's output"
install_binary "$cli" "$fs/bin/pagesnap"
grep -v '^[[:space:]]*#' "$suites" | awk 'NF && $3 != "pagesnap" { print $3 }' | sort -u |
  while read -r target; do
    exe=$(executables <"$dir/tests.json" | awk -v t="$target" '$1 == t { print $2 }' | tail -n 1)
    [ -n "$exe" ] || { echo "no test binary named $target" >"$dir/missing"; exit 1; }
    install_binary "$exe" "$fs/tests/$target"
  done || give_up "$(cat "$dir/missing")"
cp "$here/init" "$fs/init"
cp "$suites" "$fs/suites.txt"
echo "$suite_timeout" >"$fs/suite-timeout"
(cd "$fs" && find . | busybox cpio -o -H newc 2>/dev/null) >"$dir/initramfs.cpio"

# --- boot each kernel ----------------------------------------------------------
for vmlinuz in "${kernels[@]}"; do
  release=${vmlinuz##*/vmlinuz-}
  log=$dir/$release.log
  echo "kernel matrix: booting $release (software emulation; log in $log)" >&2
  # CPU seconds as well as wall seconds: on a shared machine the wall time says
  # more about the neighbours than about the matrix.
  TIMEFORMAT='%0R %0U %0S'
  # A guest that dies before it runs /init is retried once: multi-threaded TCG
  # sometimes trips over the kernel's own boot-time code patching (seen: an
  # int3 Oops in sched_clock_cpu at 1.4 s on 6.12), which says nothing of pagesnap.
  for attempt in 1 2; do
    { time timeout "$boot_timeout" qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp 2 \
      -m 4096 -nographic -no-reboot -kernel "$vmlinuz" -initrd "$dir/initramfs.cpio" \
      -append "console=ttyS0 quiet panic=-1" </dev/null >"$log" 2>&1 || true; } 2>"$dir/time"
    if grep -aq '@@matrix kernel' "$log" || [ "$attempt" = 2 ]; then
      break
    fi
    cp "$log" "$log.first"
    echo "kernel matrix: $release never ran /init; booting it again (first log: $log.first)" >&2
  done
  read -r wall user sys <"$dir/time"
  echo "kernel matrix: $release took $wall s ($((user + sys)) s of CPU)" >&2
  "$here/results.sh" "$log" "$release" "$suites" "$wall" "$((user + sys))" >>"$results.part"
done
mv "$results.part" "$results"
column -t -s $'\t' "$results" 2>/dev/null || cat "$results"
