#!/bin/sh
# Entrypoint of the Flightdeck images: runs `flightdeck-$FLIGHTDECK_SERVICE <command>`.
#   (no arguments) or `serve [extra flags]`  the service on 0.0.0.0:$FLIGHTDECK_PORT
#   migrate | check-settings | <any other subcommand> [args]   that subcommand, as given
# FLIGHTDECK_SERVICE and FLIGHTDECK_PORT are baked in by the Dockerfile. The proxies whose
# X-Forwarded-* headers are trusted come from the FORWARDED_ALLOW_IPS setting, read by
# `serve` itself (default 127.0.0.1: none but loopback; compose and Kubernetes set it to
# their ingress's addresses; production refuses "*").
set -eu

: "${FLIGHTDECK_SERVICE:?FLIGHTDECK_SERVICE is not set (the image is built with --build-arg SERVICE=...)}"
: "${FLIGHTDECK_PORT:?FLIGHTDECK_PORT is not set}"
command="flightdeck-${FLIGHTDECK_SERVICE}"

if [ "$#" -eq 0 ]; then
    set -- serve
fi
if [ "$1" = "serve" ]; then
    shift
    exec "$command" serve \
        --host 0.0.0.0 \
        --port "$FLIGHTDECK_PORT" \
        "$@"
fi
exec "$command" "$@"
