#!/usr/bin/env bash
# run_fuzzer.sh FUZZER CORPUS SECONDS: runs a libFuzzer target for SECONDS from the seeds in
# CORPUS (read only: what it finds goes to a scratch directory beside the fuzzer). Any crash,
# sanitizer report, leak, timeout or out-of-memory fails it; the input that did it is kept as
# <fuzzer>.out/crash-* (or leak-*, timeout-*, oom-*) and its path printed, for the corpus.
set -euo pipefail
fuzzer=$1 corpus=$2 seconds=$3
work="$fuzzer.out"
rm -rf "$work"
mkdir -p "$work/new"
# -timeout: one input may take 10 s; -rss_limit_mb: 2 GiB, well above what any target needs;
# -close_fd_mask: the targets' own output (protobuf's and the devices' logs) is dropped, libFuzzer's
# and the sanitizers' reports are not.
"$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -close_fd_mask=3 \
  -artifact_prefix="$work/" "$work/new" "$corpus"
