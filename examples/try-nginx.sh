#!/usr/bin/env bash
# Kept for old links: the same as `examples/try.sh nginx` (see that script
# for what it does and its environment variables).
exec "$(dirname "$0")/try.sh" nginx "$@"
