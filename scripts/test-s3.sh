#!/usr/bin/env bash
# Sourced by scripts/test.sh: starts an S3-compatible store for sandbox_log_archive's tests —
# moto in server mode (PyPI moto[server], pinned, installed once per machine into
# ~/.cache/quarry/moto-venv) — on 127.0.0.1:<free port>, with authentication on: moto accepts
# the first requests unsigned (INITIAL_NO_AUTH_ACTION_COUNT), which create an IAM user allowed
# s3:*, its access key and the test bucket; every later request must be signed with that key
# (a wrong key or secret gets 403). Stops the server, by PID, when the calling shell exits
# (after whatever EXIT trap was already set).
# Exports QUARRY_TEST_S3_ENDPOINT (http://127.0.0.1:PORT), QUARRY_TEST_S3_REGION,
# QUARRY_TEST_S3_BUCKET, QUARRY_TEST_S3_ACCESS_KEY and QUARRY_TEST_S3_SECRET_KEY.

QUARRY_MOTO_VERSION=5.2.5
QUARRY_MOTO_VENV=${XDG_CACHE_HOME:-$HOME/.cache}/quarry/moto-venv
QUARRY_S3_DIR=${QUARRY_S3_DIR:-$PWD/target/test-s3}
if ! "$QUARRY_MOTO_VENV/bin/python" -c "import moto; print(moto.__version__)" 2>/dev/null | grep -qx "$QUARRY_MOTO_VERSION"; then
    python3 -m venv "$QUARRY_MOTO_VENV"
    "$QUARRY_MOTO_VENV/bin/pip" install --quiet --disable-pip-version-check \
        "moto[server]==$QUARRY_MOTO_VERSION" >"${TMPDIR:-/tmp}/quarry-moto-pip.log" 2>&1 \
        || { tail -20 "${TMPDIR:-/tmp}/quarry-moto-pip.log"; exit 1; }
fi
rm -rf "$QUARRY_S3_DIR"
mkdir -p "$QUARRY_S3_DIR"

# Starts moto on 127.0.0.1:$1. Four unsigned requests (create-user, put-user-policy,
# create-access-key, create-bucket), then only signed ones.
quarry_s3_start() {
    INITIAL_NO_AUTH_ACTION_COUNT=4 exec "$QUARRY_MOTO_VENV/bin/moto_server" -H 127.0.0.1 -p "$1"
}
source scripts/test-serve.sh
# Stopped on exit, before the EXIT trap that was there before.
quarry_serve_on_free_port moto_server "$QUARRY_S3_DIR/moto.log" quarry_s3_start
QUARRY_S3_PID=$QUARRY_SERVED_PID
port=$QUARRY_SERVED_PORT

export QUARRY_TEST_S3_ENDPOINT=http://127.0.0.1:$port
export QUARRY_TEST_S3_REGION=us-east-1
export QUARRY_TEST_S3_BUCKET=quarry-archive-test
# The user, its policy, its key and the bucket; prints `KEY SECRET`.
quarry_s3_keys=$("$QUARRY_MOTO_VENV/bin/python" - <<'EOF'
import json, os
import boto3
kw = dict(endpoint_url=os.environ["QUARRY_TEST_S3_ENDPOINT"], region_name=os.environ["QUARRY_TEST_S3_REGION"],
          aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
iam = boto3.client("iam", **kw)
iam.create_user(UserName="quarry-archiver")
iam.put_user_policy(UserName="quarry-archiver", PolicyName="s3", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
key = iam.create_access_key(UserName="quarry-archiver")["AccessKey"]
boto3.client("s3", **kw).create_bucket(Bucket=os.environ["QUARRY_TEST_S3_BUCKET"])
print(key["AccessKeyId"], key["SecretAccessKey"])
EOF
) || { echo "setting up the moto S3 store failed:"; tail -20 "$QUARRY_S3_DIR/moto.log"; exit 1; }
QUARRY_TEST_S3_ACCESS_KEY=${quarry_s3_keys% *}
QUARRY_TEST_S3_SECRET_KEY=${quarry_s3_keys#* }
export QUARRY_TEST_S3_ACCESS_KEY QUARRY_TEST_S3_SECRET_KEY
echo "test S3 store: moto pid $QUARRY_S3_PID, $QUARRY_TEST_S3_ENDPOINT, bucket $QUARRY_TEST_S3_BUCKET"
