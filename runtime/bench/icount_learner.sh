#!/usr/bin/env bash
# icount_learner.sh -- guest instructions of the C learner's learning step and of one experience, under qemu-aarch64
# (user mode) and callgrind, for `make icount-learner`.
#
#   icount_learner.sh MODEL DATA K N CHECK_BINARY CHECK_EXPECTED [callgrind:]LABEL=BINARY ...
#
# DATA holds benchmarks/clearner.py --export's files (exp1.u8, exp1.i32: experience 1 of the demo stream; exp1.idx:
# its minibatches) and state.bin, a learner state after the fill (the Makefile makes it on the host; a state blob is
# the same bytes on every path). Every BINARY is bench/bench_learner.c of one build, run with --quiet (one line out:
# the path, the state's CRC-32, an FNV-1a of the head's levels; no clock read) and EPOCHS (environment, default 4):
#
#   base    --load state.bin                              the program, the model's set-up, the state's loading
#   learn   --load state.bin --learn exp1,N               + bnn_learner_learn on N images: per experience = learn - base
#   s0      --load state.bin --steps exp1,idx,0           + the experience's start (the head's rows at q_b)
#   s1, sK  ... --steps exp1,idx,1 and 1 + K              one step = s1 - s0; per step = (sK - s0) / (1 + K)
#   f       ... --steps exp1,idx,1 + K --frozen-only      the steps' frozen part alone: (f - s0) / (1 + K) per step
#
# A step (bench_learner.c: bnn_learner_learn's inner loop) is batch_size (50) new images through the frozen part, the
# replayed patterns (128) sampled and decoded, the head's integer step. Steps differ in their images and replayed
# patterns, so their counts differ a little (the first step is printed beside the mean); a run's count is exact and
# repeatable. Every run's output line must be the same for every build (the learners compute the same bits on every
# path); with N's experience the line carries the state after it.
#
# qemu's counter as bench/icount_aarch64.sh's ("tb": -d in_asm,nochain,exec, each executed block's instructions from
# its in_asm listing; every executed block must have one), checked first on CHECK_BINARY (a program of known count,
# CHECK_EXPECTED) by it and by one instruction per block (-singlestep / -one-insn-per-tb), and on the first build's
# base run by both. A "callgrind:" build runs on the host under valgrind --tool=callgrind (its "Collected" count).
set -u
QEMU=${QEMU:-qemu-aarch64 -L /usr/aarch64-linux-gnu}
EPOCHS=${EPOCHS:-4}
if [ $# -lt 7 ]; then sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 2; fi
model=$1 data=$2 k=$3 n=$4 check=$5 check_expected=$6
shift 6
[ "$k" -ge 1 ] 2>/dev/null && [ "$k" -le 8 ] || { echo "K must be 1 .. 8"; exit 2; }
[ "$n" -ge 1 ] 2>/dev/null || { echo "N must be a number of images"; exit 2; }
for f in exp1.u8 exp1.i32 exp1.idx state.bin; do
    [ -f "$data/$f" ] || { echo "$data/$f missing (make icount-learner writes it)"; exit 2; }
done
one_insn=-singlestep
$QEMU --help 2>/dev/null | grep -q -- -one-insn-per-tb && one_insn=-one-insn-per-tb
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# count insn|tb|callgrind BINARY ARGS...: the instructions executed; the program's stdout in $tmp/out, its status in
# $tmp/rc; executed blocks without a listing (tb) in $tmp/missing
count() {
    local method=$1
    shift
    echo 0 > "$tmp/missing"
    case $method in
    insn)
        { $QEMU $one_insn -d nochain,exec -D /dev/fd/3 "$@" > "$tmp/out"; echo $? > "$tmp/rc"; } 3>&1 | grep -c '^Trace' ;;
    tb)
        { $QEMU -d in_asm,nochain,exec -D /dev/fd/3 "$@" > "$tmp/out"; echo $? > "$tmp/rc"; } 3>&1 | awk -v missing="$tmp/missing" '
            /^IN:/ { listing = 1; n = 0; next }
            listing && /^0x[0-9a-f]+:/ { n++; next }
            listing && /^$/ { pending = n; listing = 0; fresh = 1; next }
            /^Trace/ { tb = $3; if (fresh) { size[tb] = pending; fresh = 0 }
                       if (!(tb in size)) unknown++; total += size[tb] }
            END { printf "%d\n", total; printf "%d\n", unknown > missing }' ;;
    callgrind)
        valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" > "$tmp/out" 2> "$tmp/vg"; echo $? > "$tmp/rc"
        awk '/Collected :/ { print $NF }' "$tmp/vg" ;;
    esac
}

counted() {
    local method=$1 what=$2
    shift 2
    local c
    c=$(count "$method" "$@")
    if [ "$(cat "$tmp/rc")" != 0 ]; then echo "FAIL $what ($method): exit status $(cat "$tmp/rc")" >&2; exit 1; fi
    if [ "$(cat "$tmp/missing")" != 0 ]; then
        echo "FAIL $what (tb): $(cat "$tmp/missing") executed blocks without an in_asm listing" >&2; exit 1; fi
    [ -n "$c" ] || { echo "FAIL $what ($method): no count" >&2; exit 1; }
    echo "$c"
}

start=$(date +%s)
for method in insn tb; do
    got=$(counted $method "counter check" "$check") || exit 1
    [ "$got" = "$check_expected" ] || { echo "FAIL counter check ($method): $got instructions, expected $check_expected"; exit 1; }
done
echo "counter check: $(basename "$check") counted $got instructions by both counters, expected $check_expected (exact)"

common=("$model" --quiet --epochs "$EPOCHS" --load "$data/state.bin")
exp1="$data/exp1.u8,$data/exp1.i32"
steps="$exp1,$data/exp1.idx"
runs=(base learn s0 s1 sK f)
args_base=()
args_learn=(--learn "$exp1,$n")
args_s0=(--steps "$steps,0")
args_s1=(--steps "$steps,1")
args_sK=(--steps "$steps,$((1 + k))")
args_f=(--steps "$steps,$((1 + k))" --frozen-only)

first=
for spec in "$@"; do
    [ "${spec#callgrind:}" = "$spec" ] && { first=${spec#*=}; break; }
done
if [ -n "$first" ]; then
    a=$(counted insn "cross-check" "$first" "${common[@]}") || exit 1
    b=$(counted tb "cross-check" "$first" "${common[@]}") || exit 1
    [ "$a" = "$b" ] || { echo "FAIL cross-check: base run: $a instructions by insn, $b by tb"; exit 1; }
    echo "cross-check: $(basename "$(dirname "$first")") base run counted $a instructions by both counters"
fi

fail=0
declare -A ref=()
results=()
for spec in "$@"; do
    method=tb
    if [ "${spec#callgrind:}" != "$spec" ]; then method=callgrind; spec=${spec#callgrind:}; fi
    label=${spec%%=*} bin=${spec#*=}
    declare -A c=()
    for r in "${runs[@]}"; do
        eval "extra=(\"\${args_$r[@]}\")"
        c[$r]=$(counted $method "$label $r" "$bin" "${common[@]}" "${extra[@]}") || exit 1
        out=$(cut -d' ' -f2- "$tmp/out")  # without the path's name
        if [ -z "${ref[$r]:-}" ]; then ref[$r]=$out; elif [ "$out" != "${ref[$r]}" ]; then
            echo "FAIL $label $r: output '$out', the first build's '${ref[$r]}'"; fail=1; fi
        echo "   $label $r: ${c[$r]} ($(cat "$tmp/out"))"
    done
    steps_n=$((1 + k))
    per_step=$(( (c[sK] - c[s0]) / steps_n ))
    first_step=$(( c[s1] - c[s0] ))
    rest=$(( (c[sK] - c[s1]) / k ))
    frozen=$(( (c[f] - c[s0]) / steps_n ))
    experience=$(( c[learn] - c[base] ))
    results+=("$label|$method|$per_step|$frozen|$((per_step - frozen))|$first_step|$rest|$experience")
    unset c
done

echo
echo "instructions, $(basename "$model"), $EPOCHS epochs, $(${QEMU%% *} --version | head -1)$(
    [ "${*#*callgrind:}" != "$*" ] && echo "; $(valgrind --version)")"
printf '%-9s %-9s %14s %14s %14s %22s %16s %10s\n' build counter "per step" "frozen part" "replay+head" \
    "first / next $k steps" "experience N=$n" vs-portable
for r in "${results[@]}"; do
    IFS='|' read -r label method per frozen rh one rest exp <<< "$r"
    ratio=
    if [ "$label" != portable ] && [ "$method" = tb ]; then
        for q in "${results[@]}"; do
            IFS='|' read -r l2 m2 p2 f2 rh2 o2 r2 e2 <<< "$q"
            [ "$l2" = portable ] && ratio=$(awk -v a="$per" -v b="$p2" -v c="$exp" -v d="$e2" \
                'BEGIN {printf "%.3f/%.3f", a / b, c / d}')
        done
    fi
    printf '%-9s %-9s %14s %14s %14s %22s %16s %10s\n' "$label" "$method" "$per" "$frozen" "$rh" "$one / $rest" \
        "$exp" "$ratio"
done
echo "(per step: (sK - s0) / $((1 + k)) over $((1 + k)) steps of 50 new + 128 replayed; frozen part: the same steps'" \
     "images alone; experience: $n images of experience 1, $EPOCHS epochs, then CWR*'s consolidation and the" \
     "memory's update; vs-portable: per step / per experience)"
echo "($(( $(date +%s) - start )) s wall)"
exit $fail
