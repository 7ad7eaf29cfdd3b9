#!/usr/bin/env bash
# Try a shipped proxy config on this machine, as any user, without touching
# system paths: the proxy runs in the foreground from a scratch directory (its
# config copy, pid and logs live there), in front of one tollgate and a
# stand-in app that answers "app ok" to everything (served by the proxy
# itself, on APP). Ctrl-C stops it.
#
#   examples/try.sh nginx      # deploy/nginx/nginx.conf
#   examples/try.sh caddy      # deploy/caddy/Caddyfile
#   examples/try.sh haproxy    # deploy/haproxy/haproxy.cfg + tollgate.lua
#
# Environment (all optional; the README's "Quick start" lists them too):
#   LISTEN    where the proxy listens            (127.0.0.1:8000)
#   TOLLGATE  the tollgate replica it asks       (127.0.0.1:8080)
#   APP       where the stand-in app listens     (127.0.0.1:3000)
#   CHECK     HAProxy only: its local address for tollgate calls (127.0.0.1:8079)
#   DIR       the scratch directory              (a new temp dir)
set -euo pipefail
proxy=${1:-}
case $proxy in
nginx | caddy | haproxy) ;;
*)
    echo "usage: examples/try.sh nginx|caddy|haproxy" >&2
    exit 2
    ;;
esac
cd "$(dirname "$0")/.."
listen=${LISTEN:-127.0.0.1:8000}
tollgate=${TOLLGATE:-127.0.0.1:8080}
app=${APP:-127.0.0.1:3000}
check=${CHECK:-127.0.0.1:8079}
dir=${DIR:-$(mktemp -d -t "tollgate-$proxy-XXXXXX")}
mkdir -p "$dir/logs"
echo "$proxy on http://$listen -> tollgate $tollgate, app $app (files in $dir)" >&2

# Each branch: the shipped file with this machine's addresses, one tollgate
# replica (the second one's line is dropped), and the stand-in app.
case $proxy in
nginx)
    # The shipped file sets no log paths (a real install has its own): here
    # they go to the scratch directory (errors to the terminal).
    sed -e "s/listen 8000;/listen $listen;/" \
        -e "s/server 127.0.0.1:8080 /server $tollgate /" \
        -e "/server 127.0.0.1:9080 /d" \
        -e "s/server 127.0.0.1:3000;/server $app;/" \
        -e "s|^http {|http {\n    access_log logs/access.log;\n    server { listen $app; default_type text/plain; return 200 \"app ok\\\\n\"; }|" \
        deploy/nginx/nginx.conf >"$dir/nginx.conf"
    exec nginx -p "$dir" -c "$dir/nginx.conf" -g "daemon off; pid $dir/nginx.pid; error_log stderr;"
    ;;
caddy)
    # A site address with a host would match only that Host header: listen
    # on the port, bound to the host.
    sed -e "s|^http://:8000 {|http://:${listen##*:} {\n\tbind ${listen%:*}|" \
        -e "s/reverse_proxy 127.0.0.1:8080 127.0.0.1:9080 {/reverse_proxy $tollgate {/" \
        -e "s/reverse_proxy 127.0.0.1:3000$/reverse_proxy $app/" \
        deploy/caddy/Caddyfile >"$dir/Caddyfile"
    printf '\nhttp://:%s {\n\tbind %s\n\trespond "app ok\n" 200\n}\n' "${app##*:}" "${app%:*}" >>"$dir/Caddyfile"
    # Caddy keeps its state under HOME / XDG: the scratch directory.
    export HOME="$dir" XDG_DATA_HOME="$dir" XDG_CONFIG_HOME="$dir"
    exec caddy run --adapter caddyfile --config "$dir/Caddyfile"
    ;;
haproxy)
    # tollgate.lua is used as shipped: it reads the address of its calls
    # from TOLLGATE_CHECK, which the cfg sets in its global section.
    sed -e "s|setenv TOLLGATE_CHECK 127.0.0.1:8079|setenv TOLLGATE_CHECK $check|" \
        -e "s|/etc/haproxy/tollgate.lua|$PWD/deploy/haproxy/tollgate.lua|" \
        -e "s/bind :8000/bind $listen/" \
        -e "s/server tollgate1 127.0.0.1:8080/server tollgate1 $tollgate/" \
        -e "/server tollgate2 127.0.0.1:9080/d" \
        -e "s/server app1 127.0.0.1:3000/server app1 $app/" \
        deploy/haproxy/haproxy.cfg >"$dir/haproxy.cfg"
    printf '\nfrontend stand_in_app\n    bind %s\n    http-request return status 200 content-type text/plain string "app ok\\n"\n' "$app" >>"$dir/haproxy.cfg"
    exec haproxy -db -f "$dir/haproxy.cfg"
    ;;
esac
