#!/usr/bin/env bash
# Turns one guest's serial log into rows of the matrix's results file:
#   KERNEL <tab> SUITE <tab> pass|fail|missing <tab> SECONDS <tab> DETAIL
# The first row, suite `guest`, says whether the guest booted, ran its suites and
# powered off, and how long that took on the host (WALL seconds, CPU seconds).
# Usage: kernels/results.sh LOG KERNEL SUITES_FILE WALL CPU
set -euo pipefail
log=$1 kernel=$2 suites=$3 wall=$4 cpu=$5

# The lines between a suite's begin and end markers (or to the end of the log).
section() {
  awk -v b="@@suite $1 begin" -v e="@@suite $1 end" '
    index($0, e) == 1 { exit } on { print } index($0, b) == 1 { on = 1 }' "$log" | tr -d '\r'
}

row() { printf '%s\t%s\t%s\t%s\t%s\n' "$kernel" "$@"; }

if grep -aq '^@@matrix done' "$log"; then
  row guest pass "$wall" "booted, ran its suites, powered off; cpu=${cpu}s"
elif grep -aq '@@matrix kernel' "$log"; then
  row guest fail "$wall" "stopped before the end (crash or timeout): $(tail -n 2 "$log" | tr -d '\r' | tr '\n\t' '  ')"
else
  row guest fail "$wall" "never ran /init: $(tail -n 3 "$log" | tr -d '\r' | tr '\n\t' '  ')"
fi
# Whether KERNEL runs a suite: KERNELS is `all` or comma-separated prefixes.
runs_here() {
  [ "$1" = all ] && return 0
  local prefix
  for prefix in ${1//,/ }; do
    [[ $kernel == "$prefix"* ]] && return 0
  done
  return 1
}

grep -v '^[[:space:]]*#' "$suites" | while read -r name kernels _; do
  [ -n "$name" ] || continue
  runs_here "$kernels" || continue
  end=$(grep -a "^@@suite $name end " "$log" | tr -d '\r' | head -n 1 || true)
  if [ -z "$end" ]; then
    if grep -aq "^@@suite $name begin" "$log"; then
      row "$name" fail 0 "did not finish: the guest crashed or hit the boot timeout"
    else
      row "$name" missing 0 "never started"
    fi
    continue
  fi
  rc=${end#*rc=}; rc=${rc%% *}
  secs=${end#*seconds=}
  text=$(section "$name")
  if [ "$name" = probe ]; then
    auto=$(sed -n 's/^Tracking::Auto picks //p' <<<"$text")
    avail=$(sed -n 's/^ . \([a-z-]*\) *available$/\1/p' <<<"$text" | paste -sd, -)
    detail="auto=$auto available=$avail"
  else
    # grep finds nothing in a suite that crashed early: not an error here.
    passed=$({ grep -ao '[0-9]* passed' || true; } <<<"$text" | awk '{n += $1} END {print n + 0}')
    failed=$({ grep -ao '[0-9]* failed' || true; } <<<"$text" | awk '{n += $1} END {print n + 0}')
    skipped=$({ grep -ao 'skipping [a-z-]*:' || true; } <<<"$text" | sed 's/skipping \(.*\):/\1/' | sort -u | paste -sd, -)
    detail="passed=$passed failed=$failed skipped=${skipped:-none}"
  fi
  if [ "$rc" = 0 ]; then status=pass; else status=fail; detail="exit status $rc; $detail"; fi
  row "$name" "$status" "$secs" "$detail"
done
