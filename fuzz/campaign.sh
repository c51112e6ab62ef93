#!/bin/bash
# A longer fuzz run measured in CPU time, not wall time, so a run on a busy
# machine still counts what it did: fuzz/campaign.sh TARGET CPU_SECONDS [libFuzzer args]
# Runs fuzz/run.sh, stops the fuzzer with SIGINT (libFuzzer prints its final
# stats) once its own user+system time reaches the budget, and appends one
# summary line to fuzz/campaigns.tsv: date, target, CPU s, wall s, execs,
# crashes (artifacts written but libFuzzer's `slow-unit-*` notes, which
# say an input took long, not that it failed; the log names them).
set -uo pipefail
cd "$(dirname "$0")"
target=${1:?usage: campaign.sh TARGET CPU_SECONDS [libfuzzer args]}
budget=${2:?usage: campaign.sh TARGET CPU_SECONDS [libfuzzer args]}
shift 2
mkdir -p logs artifacts/"$target"
log=logs/$target-$(date +%Y%m%d-%H%M%S).log
failures() { ls artifacts/"$target" | grep -vc '^slow-unit-'; }
before=$(failures)
tick=$(getconf CLK_TCK)
start=$(date +%s)
./run.sh "$target" 1000000 -print_final_stats=1 "$@" >"$log" 2>&1 &
pid=$!
cpu=0
while kill -0 "$pid" 2>/dev/null; do
    sleep 5
    # Fields 14 and 15 of /proc/PID/stat: user and system ticks. run.sh execs
    # the fuzzer, so after the build this is the fuzzer's own time.
    read -r -a st < /proc/"$pid"/stat 2>/dev/null || break
    cpu=$(( (st[13] + st[14]) / tick ))
    if [ "$cpu" -ge "$budget" ]; then kill -INT "$pid"; break; fi
done
wait "$pid"
wall=$(( $(date +%s) - start ))
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
[ -n "$execs" ] || execs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
crashes=$(( $(failures) - before ))
printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -I)" "$target" "$cpu" "$wall" "${execs:-0}" "$crashes" | tee -a campaigns.tsv
