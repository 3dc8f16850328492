# Step timing for the test and CI scripts: `step NAME CMD...` runs CMD and
# records how long it took in $RETEN_STEP_LOG (one "seconds<TAB>name" line a
# step); `steps_table` prints them as a table. Sourced, not run.

: "${RETEN_STEP_LOG:=$(mktemp -t reten-steps.XXXXXX)}"
export RETEN_STEP_LOG
# A script run by another's step records its steps indented under it.
RETEN_STEP_DEPTH=$((${RETEN_STEP_DEPTH:--1} + 1))
export RETEN_STEP_DEPTH

step() {
    local name=$1 start=$SECONDS rc=0
    shift
    echo "==> $name"
    "$@" || rc=$?
    local indent=""
    [[ $RETEN_STEP_DEPTH -gt 0 ]] && indent="  - "
    printf '%s\t%s%s%s\n' "$((SECONDS - start))" "$indent" "$name" "$([[ $rc -eq 0 ]] || echo " (FAILED, exit $rc)")" >>"$RETEN_STEP_LOG"
    return "$rc"
}

steps_table() {
    [[ -s $RETEN_STEP_LOG ]] || return 0
    local total=0 secs name
    echo
    printf '%-44s %8s\n' step 'wall (s)'
    printf '%-44s %8s\n' "--------------------------------------------" "--------"
    while IFS=$'\t' read -r secs name; do
        printf '%-44s %8s\n' "$name" "$secs"
        [[ $name == " "* ]] || total=$((total + secs))
    done <"$RETEN_STEP_LOG"
    printf '%-44s %8s\n' "total" "$total"
}
