#!/usr/bin/env bash
# Try deploy/nginx/nginx.conf on this machine, as any user, without touching
# system paths: nginx runs in the foreground from a scratch directory (its pid,
# logs and config copy live there), in front of one tollgate and a stand-in
# app that answers "app ok" to everything. Ctrl-C stops it.
#
#   examples/try-nginx.sh           # nginx on 127.0.0.1:8000 -> tollgate on 127.0.0.1:8080
#
# Environment (all optional): LISTEN (127.0.0.1:8000), TOLLGATE (127.0.0.1:8080),
# APP (127.0.0.1:3000, where the stand-in app listens), DIR (a new temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
listen=${LISTEN:-127.0.0.1:8000}
tollgate=${TOLLGATE:-127.0.0.1:8080}
app=${APP:-127.0.0.1:3000}
dir=${DIR:-$(mktemp -d -t tollgate-nginx-XXXXXX)}
mkdir -p "$dir/logs"

# The shipped file, with this machine's addresses: one tollgate replica (the
# second upstream line is dropped), and a stand-in app served by nginx itself.
# The shipped file sets no log paths (a real install has its own): here they
# go to the scratch directory (errors to the terminal).
sed -e "s/listen 8000;/listen $listen;/" \
    -e "s/server 127.0.0.1:8080 /server $tollgate /" \
    -e "/server 127.0.0.1:9080 /d" \
    -e "s/server 127.0.0.1:3000;/server $app;/" \
    -e "s|^http {|http {\n    access_log logs/access.log;\n    server { listen $app; default_type text/plain; return 200 \"app ok\\\\n\"; }|" \
    deploy/nginx/nginx.conf > "$dir/nginx.conf"

echo "nginx on http://$listen -> tollgate $tollgate, app $app (files in $dir)" >&2
exec nginx -p "$dir" -c "$dir/nginx.conf" -g "daemon off; pid $dir/nginx.pid; error_log stderr;"
