# ray_log_cleanup's one script, run as `bash -c <this> ray_log_cleanup <args>`: every value
# arrives as a positional parameter, never as shell text.
#   $1 the Ray temp dir             $2 session dir age, minutes
#   $3 live log age, minutes        $4 logs/old age, minutes
#   $5 runtime_env_setup age, min.  $6 rotated daemon log age, minutes
#   $7 PID-named log age, minutes   $8 names kept per category in the output
#   $9 `remove`, or `list` for a dry run: the same selection, reported, nothing removed
# Prints `found 0|1`, `live_session <name>`, then per category `count <category> <n>`, up to $8
# `sample <category> <name>` lines and `failed <category> <path>` for what could not be removed.
# Exits 0 unless the arguments are wrong; find's and rm's complaints go to stderr.
set -u
ray=$1 session_min=$2 live_min=$3 old_min=$4 setup_min=$5 rotated_min=$6 pid_min=$7 samples=$8
mode=${9:-remove}
if [ ! -d "$ray" ]; then
    echo "found 0"
    exit 0
fi
echo "found 1"
now=$(date +%s)
pid_max=$(cat /proc/sys/kernel/pid_max 2>/dev/null || echo 4194304)
declare -A count=()
declare -A shown=()

# One line per name; a name's control characters become `?` so that it stays one line.
note() {
    count[$1]=$(( ${count[$1]:-0} + 1 ))
    if [ "${shown[$1]:-0}" -lt "$samples" ]; then
        shown[$1]=$(( ${shown[$1]:-0} + 1 ))
        printf 'sample %s %s\n' "$1" "${2//[[:cntrl:]]/?}"
    fi
}

# Removes $2 (a file, or a directory tree for `sessions`) and notes it under category $1.
remove() {
    if [ "$mode" = list ]; then
        note "$1" "${2##*/}"
    elif rm -rf -- "$2" && [ ! -e "$2" ] && [ ! -L "$2" ]; then
        note "$1" "${2##*/}"
    else
        count[failed]=$(( ${count[failed]:-0} + 1 ))
        if [ "${count[failed]}" -le "$samples" ]; then
            printf 'failed %s %s\n' "$1" "${2//[[:cntrl:]]/?}"
        fi
    fi
}

# Whether an mtime (`find -printf %T@`, seconds) is more than $2 minutes ago.
older_than() { [ $(( now - ${1%.*} )) -gt $(( $2 * 60 )) ]; }

# The live session: session_latest's target (ROCK: its basename); never removed.
live=$(readlink -- "$ray/session_latest" 2>/dev/null)
live=${live%/}
live=${live##*/}
printf 'live_session %s\n' "${live//[[:cntrl:]]/?}"

# 1. Stale session_* dirs directly under the temp dir, except session_latest and its target.
while IFS= read -r -d '' entry; do
    path=${entry#* }
    name=${path##*/}
    [ "$name" = session_latest ] && continue
    [ -n "$live" ] && [ "$name" = "$live" ] && continue
    older_than "${entry%% *}" "$session_min" && remove sessions "$path"
done < <(find "$ray" -mindepth 1 -maxdepth 1 -type d -name 'session_*' -printf '%T@ %p\0')

logs=$ray/session_latest/logs
daemon='^(raylet|gcs_server|runtime_env_agent|dashboard|monitor|log_monitor)'
if [ -d "$logs" ]; then
    # 2. The live session's logs, each file in one category, checked in this order:
    while IFS= read -r -d '' entry; do
        mtime=${entry%% *}
        path=${entry#* }
        name=${path##*/}
        # rotated copies of daemon logs (raylet.1.out): no process writes them any more;
        if [[ $name =~ $daemon\.[0-9]+\.(out|err|log)$ ]]; then
            older_than "$mtime" "$rotated_min" && remove rotated_daemon "$path"
        # active daemon logs (raylet.out, agent-<id>.err, …): a live daemon writes them;
        elif [[ $name =~ ${daemon}|^agent- ]]; then
            :
        # runtime_env_setup-<job id>: the trailing token is a job id, not a PID;
        elif [[ $name == runtime_env_setup-* ]]; then
            older_than "$mtime" "$setup_min" && remove setup "$path"
        # logs named after a process (worker-…-<pid>.out) whose process is gone (a PID that
        # kill -0 may not signal but /proc shows is alive);
        elif [[ $name =~ [_-]0*([0-9]{1,7})\.(log|err|out)$ ]] && [ "${BASH_REMATCH[1]}" -le "$pid_max" ] \
            && [ "${BASH_REMATCH[1]}" -gt 0 ]; then
            pid=${BASH_REMATCH[1]}
            if older_than "$mtime" "$pid_min" && ! kill -0 "$pid" 2>/dev/null && [ ! -d "/proc/$pid" ]; then
                remove dead_pid "$path"
            fi
        # everything else once it is old (the long tail).
        else
            older_than "$mtime" "$live_min" && remove stale "$path"
        fi
    done < <(find "$logs" -mindepth 1 -maxdepth 1 -type f -printf '%T@ %p\0')

    # 3. Ray's own rotation backups under logs/old, at any depth.
    if [ -d "$logs/old" ]; then
        while IFS= read -r -d '' entry; do
            older_than "${entry%% *}" "$old_min" && remove old "${entry#* }"
        done < <(find "$logs/old" -type f -printf '%T@ %p\0')
    fi
fi
for category in sessions dead_pid setup rotated_daemon stale old failed; do
    echo "count $category ${count[$category]:-0}"
done
exit 0
