# Sourced by .ci/run before the tests: a local S3-compatible server (moto, from
# PyPI) for the remote-store tests (crates/pagesnap/tests/remote_s3.rs). Without it
# those tests print why they skip; everything else runs as before.
#
#   source .ci/remote.sh      # then: cargo test --workspace
if ! command -v moto_server >/dev/null; then
  if ! command -v pip3 >/dev/null && ! command -v pip >/dev/null; then
    apt-get update -qq && apt-get install -y -qq python3-pip python3-venv
  fi
  PIP=$(command -v pip3 || command -v pip)
  "$PIP" install -q 'moto[server]' || "$PIP" install -q --break-system-packages 'moto[server]'
fi
PAGESNAP_MOTO_PORT=${PAGESNAP_MOTO_PORT:-5077}
moto_server -H 127.0.0.1 -p "$PAGESNAP_MOTO_PORT" >/tmp/pagesnap-moto.log 2>&1 &
PAGESNAP_MOTO_PID=$!
trap 'kill "$PAGESNAP_MOTO_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PAGESNAP_MOTO_PORT") 2>/dev/null && break
  sleep 0.5
done
export PAGESNAP_TEST_S3_ENDPOINT="http://127.0.0.1:$PAGESNAP_MOTO_PORT"
export AWS_ENDPOINT_URL="$PAGESNAP_TEST_S3_ENDPOINT" AWS_ALLOW_HTTP=true
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
echo "moto S3 server at $PAGESNAP_TEST_S3_ENDPOINT (log /tmp/pagesnap-moto.log)"
