#!/usr/bin/env bash
# icount_aarch64.sh -- guest instructions per inference under qemu-aarch64 (user mode), for `make icount-aarch64`.
#
#   icount_aarch64.sh MODEL K CHECK_BINARY CHECK_EXPECTED LABEL=BINARY ...
#
# Counter: qemu-aarch64 -singlestep -d nochain,exec logs one "Trace" line per executed translation block, which with
# -singlestep (one guest instruction per block) and nochain (every block entered through the logging main loop) is
# one line per executed guest instruction. The lines go through a pipe to `grep -c`, never to a file; the guest's own
# stdout goes to a file and must be the same for every run of a binary. CHECK_BINARY (bench/icount_aarch64.S, a
# static program of known instruction count) must count exactly CHECK_EXPECTED.
#
# Each LABEL=BINARY is bench/count_inference.c for one build (LABEL: "path opt", e.g. "neon -O2"); it is run, per
# part, with N = 1, 2 and 1 + K images: the per-inference count is count(2) - count(1), and must equal
# (count(1 + K) - count(2)) / (K - 1) exactly, which is what is reported as (count(1 + K) - count(1)) / K. The table
# follows, with each NEON count's ratio to the portable build of the same opt. QEMU (environment) is the runner, as
# the Makefile's: qemu-aarch64 -L /usr/aarch64-linux-gnu.
set -u
QEMU=${QEMU:-qemu-aarch64 -L /usr/aarch64-linux-gnu}
if [ $# -lt 5 ]; then sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2; fi
model=$1 k=$2 check=$3 check_expected=$4
shift 4
[ "$k" -ge 2 ] || { echo "K must be at least 2"; exit 2; }
# qemu 8.1 renamed -singlestep to -one-insn-per-tb
one_insn=-singlestep
$QEMU --help 2>/dev/null | grep -q -- -one-insn-per-tb && one_insn=-one-insn-per-tb
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# count BINARY ARGS...: prints the guest instructions executed; the guest's stdout in $tmp/out, status in $tmp/rc
count() {
    { $QEMU $one_insn -d nochain,exec -D /dev/fd/3 "$@" > "$tmp/out"; echo $? > "$tmp/rc"; } 3>&1 | grep -c '^Trace'
}

start=$(date +%s)
got=$(count "$check")
if [ "$got" != "$check_expected" ] || [ "$(cat "$tmp/rc")" != 0 ]; then
    echo "FAIL counter check: $check counted $got instructions, expected $check_expected"; exit 1
fi
echo "counter check: $(basename "$check") counted $got instructions, expected $check_expected (exact)"

fail=0
results=()
for spec in "$@"; do
    label=${spec%%=*} bin=${spec#*=}
    for part in latent predict; do
        declare -A c=()
        ref=
        for n in 1 2 $((1 + k)); do
            c[$n]=$(count "$bin" "$model" "$part" "$n")
            if [ "$(cat "$tmp/rc")" != 0 ]; then echo "FAIL $label $part N=$n: exit status $(cat "$tmp/rc")"; fail=1; continue 2; fi
            out=$(cat "$tmp/out")
            if [ -z "$ref" ]; then ref=$out; elif [ "$out" != "$ref" ]; then
                echo "FAIL $label $part N=$n: output '$out', N=1 gave '$ref'"; fail=1; fi
        done
        one=$(( c[2] - c[1] )) rest=$(( c[$((1 + k))] - c[2] ))
        if [ $(( rest % (k - 1) )) != 0 ] || [ $(( rest / (k - 1) )) != "$one" ]; then
            echo "FAIL $label $part: not the same count per inference: count(2)-count(1) = $one," \
                 "(count($((1 + k)))-count(2))/$((k - 1)) = $rest/$((k - 1))"; fail=1
        fi
        total=$(( c[$((1 + k))] - c[1] ))
        per=$(( total / k ))
        [ $(( total % k )) = 0 ] || per="$per+$(( total % k ))/$k"
        echo "   $label $part: N=1 ${c[1]}, N=2 ${c[2]}, N=$((1 + k)) ${c[$((1 + k))]} -> $per per inference ($out)"
        results+=("$label|$part|$per")
        unset c
    done
done

echo
echo "instructions per inference, $(basename "$model"), under $(${QEMU%% *} --version | head -1 | sed 's/ *Copyright.*//')"
printf '%-10s %-4s %-18s %14s %15s\n' path opt part instructions neon/portable
for r in "${results[@]}"; do
    IFS='|' read -r label part per <<< "$r"
    path=${label%% *} opt=${label#* }
    name=$([ "$part" = latent ] && echo "frozen (latent)" || echo "whole (predict)")
    ratio=
    if [ "$path" != portable ]; then
        for q in "${results[@]}"; do
            IFS='|' read -r l2 p2 v2 <<< "$q"
            if [ "$l2" = "portable $opt" ] && [ "$p2" = "$part" ]; then
                ratio=$(awk -v a="${per%%+*}" -v b="${v2%%+*}" 'BEGIN {printf "%.3f", a / b}'); fi
        done
    fi
    printf '%-10s %-4s %-18s %14s %15s\n' "$path" "$opt" "$name" "$per" "$ratio"
done
echo "($(( $(date +%s) - start )) s wall)"
exit $fail
