# sandbox_log_archive's discovery, run as `bash -c <this> sandbox_log_archive <log_root> <max>`:
# every value arrives as a positional parameter, never as shell text.
#   $1 the log root, or "" for the worker's $ROCK_LOGGING_PATH   $2 most dirs listed
# Prints `root_unset`, or `root_missing <root>`, or `root <root>` then, for each directory
# directly in the root (symbolic links are not followed), `dir <seconds since the newest
# modification of anything in it> <name>` (control characters in names shown as `?`), and
# `more <n>` for directories beyond $2. Also removes this task's scratch dirs that a killed
# run left behind (older than 2 hours).
set -u
root=${1:-${ROCK_LOGGING_PATH:-}}
max=$2
while [ "${#root}" -gt 1 ] && [ "${root%/}" != "$root" ]; do root=${root%/}; done
if [ -z "$root" ]; then
    echo "root_unset"
    exit 0
fi
find "${TMPDIR:-/tmp}" -maxdepth 1 -type d -name 'quarry-archive.*' -mmin +120 \
    -exec rm -rf -- {} + 2>/dev/null
if [ ! -d "$root" ]; then
    printf 'root_missing %s\n' "${root//[[:cntrl:]]/?}"
    exit 0
fi
printf 'root %s\n' "${root//[[:cntrl:]]/?}"
now=$(date +%s)
listed=0
more=0
while IFS= read -r -d '' dir; do
    if [ "$listed" -ge "$max" ]; then
        more=$((more + 1))
        continue
    fi
    newest=$(find "$dir" -printf '%T@\n' 2>/dev/null | sort -rn | head -n 1)
    newest=${newest%.*}
    name=${dir##*/}
    printf 'dir %s %s\n' "$(( now - ${newest:-$now} ))" "${name//[[:cntrl:]]/?}"
    listed=$((listed + 1))
done < <(find "$root" -mindepth 1 -maxdepth 1 -type d -print0)
[ "$more" -gt 0 ] && echo "more $more"
exit 0
