#!/usr/bin/env bash
# Runs salesync's criterion benches of two commits side by side, alternating, on one machine:
#   scripts/bench-compare.sh BASE [NEW]        (NEW defaults to HEAD)
# BASE and NEW are commits, or checkouts (directories) whose benches are built in place.
# Each round runs every bench of BASE, then of NEW, ROUNDS times (default 2), and prints the
# criterion medians of both, so load on a shared machine hits both alike.
# Benches: mapping, initial_sync (REST path), delivery (deliver rounds), the store's outbox
# claim + ack and page upserts (SQLite and PostgreSQL; PostgreSQL on 127.0.0.1:5432).
# Environment: ROUNDS, CARGO_TARGET_DIR (default target-bench beside the checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:?usage: scripts/bench-compare.sh BASE [NEW]}
new=${2:-HEAD}
rounds=${ROUNDS:-2}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/../target-bench}
work=$(mktemp -d)
# Only the worktrees this script adds are removed (a checkout given as a directory is linked).
trap 'for w in "$work"/base "$work"/new; do [[ -L $w ]] || git worktree remove --force "$w" 2>/dev/null; done; rm -rf "$work"' EXIT

# Builds the benches of a commit in a worktree; prints "name path" per bench executable.
build() {
  local rev=$1 dir=$2
  if [[ -d $rev ]]; then ln -s "$(cd "$rev" && pwd)" "$dir"; else git worktree add -q --detach "$dir" "$rev"; fi
  (cd -P "$dir" &&
    cargo bench --all-features --no-run --bench mapping --bench initial_sync --bench delivery 2>&1 &&
    cargo bench -p salesync-store --all-features --no-run --bench store 2>&1) |
    sed -n 's/^ *Executable benches\/\([a-z_]*\)\.rs (\(.*\))$/\1 \2/p'
}

declare -A args=(
  [mapping]="--warm-up-time 1 --measurement-time 5"
  [initial_sync]="rest --warm-up-time 1 --sample-size 10"
  [delivery]="deliver --warm-up-time 1 --sample-size 10"
  [store]="--warm-up-time 1 --measurement-time 5 --sample-size 10"
)

mapfile -t base_bins < <(build "$base" "$work/base")
mapfile -t new_bins < <(build "$new" "$work/new")

for round in $(seq 1 "$rounds"); do
  for side in base new; do
    if [[ $side == base ]]; then bins=("${base_bins[@]}"); else bins=("${new_bins[@]}"); fi
    for line in "${bins[@]}"; do
      name=${line%% *}
      bin=${line#* }
      # Criterion benches run from their package's directory (they read fixtures relative to it).
      (cd -P "$work/$side" && "$bin" --bench ${args[$name]} --noplot 2>/dev/null) |
        awk -v side="$side" -v round="$round" '
          /^[a-z_]+\/[^ ]*$/ { id = $1 }
          /^[a-z_]+\/[^ ]+ +time:/ { id = $1 }
          /time:/ && !/%/ { sub(/.*time: *\[/, ""); split($0, t, " "); printf "%-5s round %s  %-48s %s %s\n", side, round, id, t[3], t[4] }'
    done
  done
done
