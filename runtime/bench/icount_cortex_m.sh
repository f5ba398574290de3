#!/usr/bin/env bash
# icount_cortex_m.sh -- guest instructions per inference and per learning step of the Cortex-M firmware (mcu/) under
# qemu-system-arm, for `make icount-cortex-m`.
#
#   icount_cortex_m.sh CHECK_ELF CHECK_EXPECTED LABEL=MACHINE:DIR ...
#
# DIR: one firmware build (DIR/firmware.elf and DIR/firmware.map, built to read its job from DIR/job.txt), DIR/..: the
# jobs tests/mcu_job.py bench wrote for it (jobs/*.txt, @OUT@ standing for DIR; bench.txt: the settings;
# jobs/flash.txt: the flash image IMAGE.bin a job's state is loaded from, which DIR/firmware-IMAGE.elf holds in its
# state region: the same firmware, its flash programmed). MACHINE: the QEMU board (mps2-an500: Cortex-M7, mps2-an386:
# Cortex-M4F).
#
# The counter is bench/icount_aarch64.sh's, in system mode (Debian's qemu has no TCG plugins): -d in_asm,nochain,exec
# logs one "Trace" line per executed block (nochain: every block entered through the logging main loop), each
# block's instruction count taken from its in_asm listing, printed when it is translated just before its first
# "Trace"; every executed block must have a listing. Each block is also charged to the function QEMU names on its
# "Trace" line (the ELF's symbols) and through the linker map to a part: the runtime's files (kernels, model,
# learner, runtime: rng/store/crc), the firmware (firmware.c, startup.c), newlib's libraries (libc_nano: stdio,
# memcpy...; librdimon: semihosting), libm, libgcc (soft-float and integer helpers). A semihosting call (bkpt 0xab)
# counts as one instruction: the host does its work. Checks first: CHECK_ELF (bench/icount_cortex_m_check.S, known
# count CHECK_EXPECTED) must count exactly that on every MACHINE by both this counter and one instruction per block
# (-singlestep: one "Trace" line per instruction), and the first DIR's predict-1 job the same by both.
#
# Per DIR, the jobs and what their differences measure (one count each, exact and repeatable):
#   predict-1, predict-2, predict-(1+K)   options + predict N test images: per inference (count(1+K) - count(1)) / K,
#                                         beside count(2) - count(1) (images differ: so can their counts, a little)
#   loaded, base                          options + load the fill state (+ save it, base) + dump the flash: a save
#                                         (serialize, CRC-32, write a slot) = count(base) - count(loaded)
#   learn-e1, learn-e2, learn-e4          options with E epochs + load the fill state (learned on the host with E
#                                         epochs: a full memory) + learn the step's experience (batch_size images: one
#                                         step per epoch) + save + dump: per step (count(e4) - count(e1)) / 3, beside
#                                         the first, count(e2) - count(e1); the experience (the settings' epochs) =
#                                         count(e<epochs>) - count(base)
# Each step holds its epoch's shuffle of the experience (batch_size indices). The per-function counts of every run
# are left in DIR/count-JOB.txt, the guest's output in DIR/run-count-JOB.log. QEMU (environment): the runner.
set -u
QEMU=${QEMU:-qemu-system-arm}
NM=${NM:-arm-none-eabi-nm}
if [ $# -lt 3 ]; then sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//'; exit 2; fi
check=$1 check_expected=$2
shift 2
one_insn=-singlestep
$QEMU --help 2>/dev/null | grep -q -- -one-insn-per-tb && one_insn=-one-insn-per-tb
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# count insn|tb MACHINE ELF OUT_PREFIX [QEMU ARGS...]: the guest's instructions on stdout; the guest's output in
# OUT_PREFIX.log, its status in $tmp/rc, for tb the per-function counts in OUT_PREFIX.txt (lines "total N",
# "missing M": executed blocks without a listing, then "FUNCTION N"; a block QEMU names no function for, e.g. the
# return path newlib's strcmp keeps before its symbol, is "@ADDRESS")
count() {
    local method=$1 machine=$2 elf=$3 prefix=$4
    shift 4
    local run=("$QEMU" -M "$machine" -nographic -semihosting-config enable=on,target=native -kernel "$elf" "$@")
    if [ "$method" = insn ]; then
        { "${run[@]}" $one_insn -d nochain,exec -D /dev/fd/3 > "$prefix.log" 2>&1; echo $? > "$tmp/rc"; } 3>&1 |
            grep -c '^Trace'
        printf 'total 0\nmissing 0\n' > "$prefix.txt"
    else
        { "${run[@]}" -d in_asm,nochain,exec -D /dev/fd/3 > "$prefix.log" 2>&1; echo $? > "$tmp/rc"; } 3>&1 | awk '
            /^IN:/ { listing = 1; n = 0; next }
            listing && /^0x[0-9a-f]+:/ { n++; next }
            listing && /^$/ { pending = n; listing = 0; fresh = 1; next }
            /^Trace/ { tb = $3
                       if (fresh) { size[tb] = pending; fresh = 0
                                    if (NF >= 5) fn[tb] = $5; else { split($4, q, "/"); fn[tb] = "@" q[2] } }
                       if (!(tb in size)) { unknown++; next }
                       total += size[tb]; by[fn[tb]] += size[tb] }
            END { printf "total %.0f\nmissing %d\n", total, unknown
                  for (f in by) printf "%s %.0f\n", f, by[f] }' > "$prefix.txt"
        awk '$1 == "total" { print $2 }' "$prefix.txt"
    fi
}

# counted METHOD WHAT MACHINE ELF PREFIX [ARGS...]: count, failing (exit) on a non-zero status, an executed block
# without a listing, or a job that did not finish (its last line: the stack's peak)
counted() {
    local method=$1 what=$2 prefix=$5
    local c
    shift 2
    c=$(count "$method" "$@")
    if [ "$(cat "$tmp/rc")" != 0 ]; then
        echo "FAIL $what ($method): exit status $(cat "$tmp/rc"): $(tail -1 "$prefix.log")" >&2; exit 1; fi
    local missing
    missing=$(awk '$1 == "missing" { print $2 }' "$prefix.txt")
    if [ "$missing" != 0 ]; then echo "FAIL $what (tb): $missing executed blocks without an in_asm listing" >&2; exit 1; fi
    [ -n "$c" ] || { echo "FAIL $what ($method): no count" >&2; exit 1; }
    echo "$c"
}

# job DIR NAME: the job's file in place (DIR/job.txt); prints the firmware to run (its flash programmed with the job's
# state, if it loads one)
job() {
    local dir=$1 name=$2 jobs=$1/../jobs
    [ -f "$jobs/$name.txt" ] || { echo "FAIL $dir: no job $name ($jobs/$name.txt)" >&2; exit 1; }
    sed "s|@OUT@|$dir|g" "$jobs/$name.txt" > "$dir/job.txt"
    local image elf=$dir/firmware.elf
    image=$(awk -v j="$name" '$1 == j { print $2 }' "$jobs/flash.txt")
    [ -z "$image" ] || elf=$dir/firmware-$(basename "$image" .bin).elf
    [ -f "$elf" ] || { echo "FAIL $dir: no $elf" >&2; exit 1; }
    echo "$elf"
}

# parts ELF MAP: "FUNCTION PART" for every function, its part from the map's input section holding its address; then
# "@RANGE LO HI PART" (decimal addresses) for every input section, for blocks named by their address
parts() {
    $NM -n --defined-only "$1" | awk -v map="$2" '
        function hex(s,   i, v) { s = tolower(s); sub(/^0x/, "", s); v = 0
                                  for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
                                  return v }
        function part(obj,   m) {
            if (match(obj, /\/[A-Za-z0-9_]+\.a\(/)) return substr(obj, RSTART + 1, RLENGTH - 4)
            sub(/.*\//, "", obj); sub(/\.o$/, "", obj)
            if (obj == "kernels_portable") return "kernels"
            if (obj == "bnn_model") return "model"
            if (obj == "bnn_learner") return "learner"
            if (obj ~ /^bnn_(common|rng|store)$/) return "runtime"
            if (obj == "firmware" || obj == "startup") return "firmware"
            return obj }
        BEGIN { while ((getline line < map) > 0) {
                    if (line ~ /^Linker script and memory map/) go = 1
                    if (!go) continue
                    n = split(line, f, " ")
                    if (pend != "" && n == 3 && f[1] ~ /^0x/) { n = 4; f[4] = f[3]; f[3] = f[2]; f[2] = f[1]; f[1] = pend }
                    pend = ""
                    if (n == 1 && f[1] ~ /^\.text/) { pend = f[1]; continue }
                    if (n == 4 && f[1] ~ /^\.text/ && f[2] ~ /^0x/ && f[3] ~ /^0x/ && hex(f[3]) > 0) {
                        k++; lo[k] = hex(f[2]); hi[k] = lo[k] + hex(f[3]); obj[k] = part(f[4]) } } }
        $2 ~ /^[tTwW]$/ { a = hex($1); p = "?"
                          for (i = 1; i <= k; i++) if (a >= lo[i] && a < hi[i]) { p = obj[i]; break }
                          print $3, p }
        END { for (i = 1; i <= k; i++) printf "@RANGE %.0f %.0f %s\n", lo[i], hi[i], obj[i] }'
}

machines=()
for spec in "$@"; do
    m=${spec#*=}; m=${m%%:*}
    case " ${machines[*]:-} " in *" $m "*) ;; *) machines+=("$m") ;; esac
done
start=$(date +%s)
for m in "${machines[@]}"; do
    for method in insn tb; do
        got=$(counted $method "counter check ($m)" "$m" "$check" "$tmp/check") || exit 1
        [ "$got" = "$check_expected" ] || {
            echo "FAIL counter check ($m, $method): $got instructions, expected $check_expected"; exit 1; }
    done
    echo "counter check: $(basename "$check") counted $got instructions on $m by both counters, expected $check_expected (exact)"
done
first=${1#*=}
m=${first%%:*} dir=${first#*:}
elf=$(job "$dir" predict-1) || exit 1
a=$(counted insn "cross-check" "$m" "$elf" "$tmp/cross") || exit 1
b=$(counted tb "cross-check" "$m" "$elf" "$tmp/cross") || exit 1
[ "$a" = "$b" ] || { echo "FAIL cross-check: ${1%%=*} predict-1: $a instructions by insn, $b by tb"; exit 1; }
echo "cross-check: ${1%%=*} predict-1 (the whole firmware: reset, options, one inference) counted $a instructions by both counters"

# diff A B [DIV]: per part, (B - A) / DIV of two runs' per-function counts, the parts in PARTS_FILE; "total" first
diff_parts() {
    awk -v div="${3:-1}" -v parts="$PARTS" '
        function hex(s,   i, v) { s = tolower(s); v = 0
                                  for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
                                  return v }
        BEGIN { while ((getline l < parts) > 0) { split(l, w, " ")
                    if (w[1] == "@RANGE") { k++; lo[k] = w[2]; hi[k] = w[3]; obj[k] = w[4] } else part[w[1]] = w[2] } }
        FNR == 1 { file++ }
        $1 == "missing" { next }
        $1 == "total" { t[file] = $2; next }
        $1 ~ /^@/ && !($1 in part) { a = hex(substr($1, 2)); part[$1] = "?"
                                     for (i = 1; i <= k; i++) if (a >= lo[i] && a < hi[i]) { part[$1] = obj[i]; break } }
        { p = ($1 in part) ? part[$1] : "?"; s[p] += (file == 1 ? -$2 : $2)
          if (p == "libgcc" || p == "libm") { fs[$1] += (file == 1 ? -$2 : $2) } }
        END { printf "total %.1f\n", (t[2] - t[1]) / div
              for (p in s) if (s[p] != 0) printf "part:%s %.1f\n", p, s[p] / div
              for (f in fs) if (fs[f] != 0) printf "fn:%s %.1f\n", f, fs[f] / div }' "$1" "$2"
}

# an awk function: commas(V), V rounded to an integer with thousands separators
COMMAS='function commas(v,   s, neg) { v = sprintf("%.0f", v); neg = v ~ /^-/; if (neg) v = substr(v, 2); s = ""
                                    while (length(v) > 3) { s = "," substr(v, length(v) - 2) s; v = substr(v, 1, length(v) - 3) }
                                    return (neg ? "-" : "") v s }'
fmt() { awk -v v="$1" "$COMMAS"' BEGIN { print commas(v) }'; }

summary=()
fail=0
for spec in "$@"; do
    label=${spec%%=*} rest=${spec#*=}
    m=${rest%%:*} dir=${rest#*:}
    k=$(awk '$1 == "k" { print $2 }' "$dir/../bench.txt")
    epochs=$(awk '$1 == "epochs" { print $2 }' "$dir/../bench.txt")
    PARTS=$dir/parts.txt
    parts "$dir/firmware.elf" "$dir/firmware.map" > "$PARTS"
    declare -A c=()
    for j in predict-1 predict-2 "predict-$((1 + k))" loaded base learn-e1 learn-e2 learn-e4; do
        elf=$(job "$dir" "$j") || exit 1
        c[$j]=$(counted tb "$label $j" "$m" "$elf" "$dir/count-$j") || exit 1
        mv "$dir/count-$j.log" "$dir/run-count-$j.log"
    done
    p1=${c[predict-1]} p2=${c[predict-2]} pk=${c[predict-$((1 + k))]}
    per_inf=$(( (pk - p1) / k )) first_inf=$(( p2 - p1 ))
    e1=${c[learn-e1]} e2=${c[learn-e2]} e4=${c[learn-e4]}
    per_step=$(( (e4 - e1) / 3 )) first_step=$(( e2 - e1 )) next_step=$(( (e4 - e2) / 2 ))
    exp=$(( ${c[learn-e$epochs]} - ${c[base]} )) save=$(( ${c[base]} - ${c[loaded]} ))
    echo
    echo "== $label ($m): $(sed -n 's/^settings //p' "$dir/../bench.txt") settings, $(basename "$(dirname "$dir")") model"
    echo "   predict: N=1 $(fmt "$p1"), N=2 $(fmt "$p2"), N=$((1 + k)) $(fmt "$pk") -> $(fmt "$per_inf") per inference" \
         "(count(2) - count(1) = $(fmt "$first_inf"))"
    echo "   learn: loaded $(fmt "${c[loaded]}"), base $(fmt "${c[base]}"), e1 $(fmt "$e1"), e2 $(fmt "$e2"), e4 $(fmt "$e4")" \
         "-> $(fmt "$per_step") per step (the first $(fmt "$first_step"), the next two $(fmt "$next_step") each); an" \
         "experience of $(awk '$1 == "batch_size" { print $2 }' "$dir/../bench.txt") images, $epochs epochs:" \
         "$(fmt "$exp"); a save $(fmt "$save")"
    for what in inference step experience save; do
        case $what in
        inference) diff_parts "$dir/count-predict-1.txt" "$dir/count-predict-$((1 + k)).txt" "$k" ;;
        step) diff_parts "$dir/count-learn-e1.txt" "$dir/count-learn-e4.txt" 3 ;;
        experience) diff_parts "$dir/count-base.txt" "$dir/count-learn-e$epochs.txt" 1 ;;
        save) diff_parts "$dir/count-loaded.txt" "$dir/count-base.txt" 1 ;;
        esac > "$dir/by-part-$what.txt"
        echo "   per $what, by part: $(awk '$1 ~ /^part:/ { sub(/^part:/, "", $1); print $1, $2 }' "$dir/by-part-$what.txt" |
            sort -k2,2nr | awk "$COMMAS"' { printf "%s%s %s", (NR > 1 ? ", " : ""), $1, commas($2) }')"
        helpers=$(awk '$1 ~ /^fn:/ { sub(/^fn:/, "", $1); print $1, $2 }' "$dir/by-part-$what.txt" | sort -k2,2nr |
                  head -8 | awk "$COMMAS"' { printf "%s%s %s", (NR > 1 ? ", " : ""), $1, commas($2) }')
        [ -n "$helpers" ] && echo "     libgcc / libm functions: $helpers"
    done
    summary+=("$label|$m|$per_inf|$first_inf|$per_step|$first_step|$next_step|$exp|$save")
    unset c
done

echo
echo "instructions, $($QEMU --version | head -1)"
printf '%-12s %-11s %14s %14s %26s %16s %11s\n' firmware machine per-inference per-step "first step / next two" \
    experience save
for r in "${summary[@]}"; do
    IFS='|' read -r label m per_inf first_inf per_step first_step next_step exp save <<< "$r"
    printf '%-12s %-11s %14s %14s %26s %16s %11s\n' "$label" "$m" "$(fmt "$per_inf")" "$(fmt "$per_step")" \
        "$(fmt "$first_step") / $(fmt "$next_step")" "$(fmt "$exp")" "$(fmt "$save")"
done
echo "($(( $(date +%s) - start )) s wall)"
exit $fail
