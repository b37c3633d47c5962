# sandbox_log_archive's upload of one log dir, run as `bash -c <this> sandbox_log_archive <args>`:
# every value arrives as a positional parameter, never as shell text.
#   $1 the log root   $2 the dir's name   $3 the object's URL   $4 the region
#   $5 the credentials file (a curl config holding `user = "KEY:SECRET"`)
#   $6 1 to delete the dir after a verified upload, else 0   $7 seconds for each request
# tar+gzip the dir into a private scratch dir, PUT it signed (AWS SigV4, the secret read by
# curl from the file: never on a command line or in the environment), HEAD it back and compare
# its size, and only then delete the dir. Prints `archived <bytes> <deleted 0|1>`, or
# `error <reason>` and exits non-zero, leaving the dir as it was.
set -u
root=$1 name=$2 url=$3 region=$4 cred=$5 delete=$6 max_time=$7
dir=$root/$name
fail() {
    printf 'error %s\n' "${1//[[:cntrl:]]/ }"
    exit "$2"
}
# The code and message of an S3 error reply (never the rest of it).
s3_error() {
    tr -d '\r\n' <"$1" | head -c 4096 | sed -n 's:.*<Code>\([^<]*\)</Code>.*<Message>\([^<]*\)</Message>.*:\1\: \2:p' | head -c 300
}
[ -d "$dir" ] && [ ! -L "$dir" ] || fail "the log dir $dir is gone" 3
[ -f "$cred" ] && [ -r "$cred" ] || fail "credentials_file $cred: not a readable file on the worker" 4
perm=$(stat -c %a -- "$cred") || fail "credentials_file $cred: cannot read its mode" 4
(( (8#$perm & 8#077) == 0 )) || fail "credentials_file $cred: mode $perm gives group or others access (chmod 600)" 4
umask 077
tmp=$(mktemp -d "${TMPDIR:-/tmp}/quarry-archive.XXXXXX") || fail "mktemp failed" 5
trap 'rm -rf -- "$tmp"' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
tar -czf "$tmp/archive.tar.gz" -C "$root" -- "$name" 2>"$tmp/err" \
    || fail "tar failed: $(head -c 300 "$tmp/err")" 6
size=$(stat -c %s "$tmp/archive.tar.gz")
sha=$(sha256sum "$tmp/archive.tar.gz") || fail "sha256sum failed" 6
sha=${sha%% *}
sign=(-q -sS --max-time "$max_time" --aws-sigv4 "aws:amz:$region:s3" -K "$cred")
code=$(curl "${sign[@]}" -o "$tmp/reply" -w '%{http_code}' -H "x-amz-content-sha256: $sha" \
    -T "$tmp/archive.tar.gz" -- "$url" 2>"$tmp/err") \
    || fail "upload: curl failed: $(head -c 300 "$tmp/err")" 7
case $code in
2??) ;;
*) fail "upload: HTTP $code $(s3_error "$tmp/reply")" 8 ;;
esac
# The SHA-256 of an empty body: a HEAD has none.
empty=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
code=$(curl "${sign[@]}" -I -o "$tmp/head" -w '%{http_code}' -H "x-amz-content-sha256: $empty" \
    -- "$url" 2>"$tmp/err") \
    || fail "verify: curl failed: $(head -c 300 "$tmp/err")" 9
[ "$code" = 200 ] || fail "verify: HEAD of the uploaded object answered HTTP $code" 9
stored=$(tr -d '\r' <"$tmp/head" | sed -n 's/^[Cc]ontent-[Ll]ength: *//p' | tail -n 1)
[ "$stored" = "$size" ] || fail "verify: the stored object has ${stored:-no} bytes, the archive $size" 9
deleted=0
if [ "$delete" = 1 ]; then
    rm -rf -- "$dir" 2>"$tmp/err"
    [ ! -e "$dir" ] || fail "uploaded, but deleting $dir failed: $(head -c 300 "$tmp/err")" 10
    deleted=1
fi
echo "archived $size $deleted"
