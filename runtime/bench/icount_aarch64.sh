#!/usr/bin/env bash
# icount_aarch64.sh -- guest instructions per inference under qemu-aarch64 (user mode), for `make icount-aarch64`.
#
#   icount_aarch64.sh MODEL K CHECK_BINARY CHECK_EXPECTED LABEL=BINARY ...
#
# Two counters from qemu's own logging (Debian's qemu-user has no TCG plugins), both read from a pipe, never a file;
# the guest's own stdout goes to a file and must be the same for every run of a binary:
#   insn: -singlestep -d nochain,exec: one "Trace" line per executed block, which with -singlestep (one guest
#         instruction per block) and nochain (every block entered through the logging main loop) is one line per
#         executed instruction: exact, but one write(2) per instruction (about 1 M instructions/s);
#   tb:   -d in_asm,nochain,exec: the same lines per executed block of normal size, each block's instruction count
#         taken from its in_asm listing (printed when it is translated, just before its first "Trace"), about 10x
#         faster. Every executed block must have a listing.
# Checks first: CHECK_BINARY (bench/icount_aarch64.S, a static program of known instruction count) must count exactly
# CHECK_EXPECTED by both, and the first LABEL's binary (latent, N = 1) the same by both. The table uses tb.
#
# Each LABEL=BINARY is bench/count_inference.c for one build (LABEL: "path opt", e.g. "neon -O2"); it is run, per
# part, with N = 1, 2 and 1 + K images: the per-inference count is count(2) - count(1), and must equal
# (count(1 + K) - count(2)) / (K - 1) exactly, which is what is reported as (count(1 + K) - count(1)) / K. The table
# follows, with each non-portable count's ratio to the portable build of the same opt. QEMU (environment) is the
# runner, as the Makefile's: qemu-aarch64 -L /usr/aarch64-linux-gnu.
set -u
QEMU=${QEMU:-qemu-aarch64 -L /usr/aarch64-linux-gnu}
if [ $# -lt 5 ]; then sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 2; fi
model=$1 k=$2 check=$3 check_expected=$4
shift 4
[ "$k" -ge 2 ] 2>/dev/null || { echo "K must be a number of at least 2"; exit 2; }
# qemu 8.1 renamed -singlestep to -one-insn-per-tb
one_insn=-singlestep
$QEMU --help 2>/dev/null | grep -q -- -one-insn-per-tb && one_insn=-one-insn-per-tb
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# count insn|tb BINARY ARGS...: prints the guest instructions executed; the guest's stdout in $tmp/out, its status in
# $tmp/rc; for tb, the number of executed blocks without a listing in $tmp/missing (must be 0)
count() {
    local method=$1
    shift
    if [ "$method" = insn ]; then
        { $QEMU $one_insn -d nochain,exec -D /dev/fd/3 "$@" > "$tmp/out"; echo $? > "$tmp/rc"; } 3>&1 | grep -c '^Trace'
        echo 0 > "$tmp/missing"
    else
        { $QEMU -d in_asm,nochain,exec -D /dev/fd/3 "$@" > "$tmp/out"; echo $? > "$tmp/rc"; } 3>&1 | awk -v missing="$tmp/missing" '
            /^IN:/ { listing = 1; n = 0; next }
            listing && /^0x[0-9a-f]+:/ { n++; next }
            listing && /^$/ { pending = n; listing = 0; fresh = 1; next }
            /^Trace/ { tb = $3; if (fresh) { size[tb] = pending; fresh = 0 }
                       if (!(tb in size)) unknown++; total += size[tb] }
            END { printf "%d\n", total; printf "%d\n", unknown > missing }'
    fi
}

# counted insn|tb WHAT BINARY ARGS...: count, failing (exit) on a non-zero status or an executed block without listing
counted() {
    local method=$1 what=$2
    shift 2
    local n
    n=$(count "$method" "$@")
    if [ "$(cat "$tmp/rc")" != 0 ]; then echo "FAIL $what ($method): exit status $(cat "$tmp/rc")" >&2; exit 1; fi
    if [ "$(cat "$tmp/missing")" != 0 ]; then
        echo "FAIL $what (tb): $(cat "$tmp/missing") executed blocks without an in_asm listing" >&2; exit 1; fi
    echo "$n"
}

start=$(date +%s)
for method in insn tb; do
    got=$(counted $method "counter check" "$check") || exit 1
    [ "$got" = "$check_expected" ] || { echo "FAIL counter check ($method): $got instructions, expected $check_expected"; exit 1; }
done
echo "counter check: $(basename "$check") counted $got instructions by both counters, expected $check_expected (exact)"
first=${1#*=}
a=$(counted insn "cross-check" "$first" "$model" latent 1) || exit 1
b=$(counted tb "cross-check" "$first" "$model" latent 1) || exit 1
[ "$a" = "$b" ] || { echo "FAIL cross-check: ${1%%=*} latent N=1: $a instructions by insn, $b by tb"; exit 1; }
echo "cross-check: ${1%%=*} latent N=1 counted $a instructions by both counters"

fail=0
results=()
for spec in "$@"; do
    label=${spec%%=*} bin=${spec#*=}
    for part in latent predict; do
        ref=
        declare -A c=()
        for n in 1 2 $((1 + k)); do
            c[$n]=$(counted tb "$label $part N=$n" "$bin" "$model" "$part" "$n") || exit 1
            out=$(cat "$tmp/out")
            if [ -z "$ref" ]; then ref=$out; elif [ "$out" != "$ref" ]; then
                echo "FAIL $label $part N=$n: output '$out', N=1 gave '$ref'"; fail=1; fi
        done
        one=$(( c[2] - c[1] )) rest=$(( c[$((1 + k))] - c[2] )) total=$(( c[$((1 + k))] - c[1] ))
        if [ $(( rest % (k - 1) )) != 0 ] || [ $(( rest / (k - 1) )) != "$one" ]; then
            echo "FAIL $label $part: not the same count per inference: count(2)-count(1) = $one," \
                 "(count($((1 + k)))-count(2))/$((k - 1)) = $rest/$((k - 1))"; fail=1
        fi
        per=$(( total / k ))
        [ $(( total % k )) = 0 ] || per="$per+$(( total % k ))/$k"
        echo "   $label $part: N=1 ${c[1]}, N=2 ${c[2]}, N=$((1 + k)) ${c[$((1 + k))]} -> $per per inference ($out)"
        results+=("$label|$part|$per")
        unset c
    done
done

echo
echo "instructions per inference, $(basename "$model"), $(${QEMU%% *} --version | head -1)"
printf '%-10s %-4s %-16s %13s %14s\n' path opt part instructions vs-portable
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
    printf '%-10s %-4s %-16s %13s %14s\n' "$path" "$opt" "$name" "$per" "$ratio"
done
echo "($(( $(date +%s) - start )) s wall)"
exit $fail
