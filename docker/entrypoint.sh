#!/bin/sh
# The sweeper image's entrypoint: refuse to start with docker/.env.example's placeholders (or
# token authentication without a token), then run the command. Every service of
# docker/compose.yaml that uses the image goes through it, and `check-env` runs it before
# PostgreSQL starts. (KubeRay sets the container's command, which replaces this entrypoint.)
set -eu

refuse() {
  echo "sweeper: $1 in docker/.env $2; set a real secret (python -c 'import secrets; print(secrets.token_hex(32))')" >&2
  exit 64
}

for name in POSTGRES_PASSWORD RAY_AUTH_TOKEN; do
  eval "value=\${$name-}"
  case "$value" in
    change-me*) refuse "$name" "is still the placeholder of .env.example ($value)" ;;
  esac
done
if [ "${RAY_AUTH_MODE-}" = token ] && [ -z "${RAY_AUTH_TOKEN-}" ]; then
  refuse RAY_AUTH_TOKEN "is not set, and RAY_AUTH_MODE=token needs it"
fi
case "${SWEEPER_STORAGE-}" in
  *:change-me*@*) refuse SWEEPER_STORAGE "holds the placeholder password of .env.example" ;;
esac

exec "$@"
