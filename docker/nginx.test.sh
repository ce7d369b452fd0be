#!/bin/sh
# Check docker/nginx.conf with `nginx -t` outside compose, where the node name does not resolve:
# render a copy whose node name is replaced by a reachable address, whose resolver line (written
# by docker/lb.sh in the container) is given inline, and whose pid, error log and temp paths
# point into a temporary directory, then test that copy.
#
#   sh docker/nginx.test.sh [CONF]          exit status is nginx -t's
#
# Environment:
#   NGINX_BIN nginx executable (default: nginx, then /usr/sbin/nginx)
#   NODES     address for parley-nodes:8080 (default 127.0.0.1:8080)
#   LISTEN    replaces `listen 80`, e.g. with 127.0.0.1:18080: needed when not root (nginx -t
#             binds the port), and for a copy that a test starts itself
#             (nginx -p OUT_DIR -c OUT_DIR/nginx.conf -g 'daemon off;')
#   OUT_DIR   render into this directory and keep it (default: a temporary one, removed);
#             the rendered file is OUT_DIR/nginx.conf
set -eu

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
conf=${1:-$here/nginx.conf}
nodes=${NODES:-127.0.0.1:8080}

nginx_bin=${NGINX_BIN:-nginx}
if ! command -v "$nginx_bin" >/dev/null 2>&1; then
  if [ -x /usr/sbin/nginx ]; then
    nginx_bin=/usr/sbin/nginx
  else
    echo "nginx.test.sh: nginx not found (install Debian's nginx-light or nginx)" >&2
    exit 127
  fi
fi

if [ -n "${OUT_DIR:-}" ]; then
  dir=$OUT_DIR
  mkdir -p "$dir"
else
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' EXIT
fi
for d in body proxy fastcgi uwsgi scgi; do
  mkdir -p "$dir/$d"
done

if [ -n "${LISTEN:-}" ]; then
  listen_expr="s|^\([[:space:]]*\)listen 80;|\1listen $LISTEN;|"
else
  listen_expr=''
fi

# Logs and temp paths into $dir: the build's temp paths (/var/lib/nginx/... on Debian) may not
# be writable for whoever runs this, and nginx creates them even under -t; /dev/stdout may be a
# pipe that another user cannot reopen.
sed \
  -e "s|parley-nodes:8080|$nodes|" \
  -e "s|include /etc/nginx/parley-resolver.conf;|resolver 127.0.0.1 valid=2s ipv6=off;|" \
  -e "s|^pid .*;|pid $dir/nginx.pid;|" \
  -e "s|^error_log [^ ;]*|error_log $dir/error.log|" \
  -e "s|access_log /dev/stdout|access_log $dir/access.log|" \
  -e "s|^http {|http {\\
    client_body_temp_path $dir/body;\\
    proxy_temp_path $dir/proxy;\\
    fastcgi_temp_path $dir/fastcgi;\\
    uwsgi_temp_path $dir/uwsgi;\\
    scgi_temp_path $dir/scgi;|" \
  -e "$listen_expr" \
  "$conf" >"$dir/nginx.conf"

if grep -q 'parley-nodes:8080\|include /etc/nginx/parley-resolver' "$dir/nginx.conf"; then
  echo "nginx.test.sh: the node name or resolver include was not replaced in $dir/nginx.conf" >&2
  exit 1
fi

"$nginx_bin" -t -p "$dir" -c "$dir/nginx.conf"
