#!/bin/sh
# The load balancer's entrypoint (compose profile "cluster"), mounted into the stock nginx image.
#
#   lb.sh [start]   write the resolver line from /etc/resolv.conf, then exec nginx (PID 1 of the
#                   container, so that the stop signal reaches nginx itself)
#   lb.sh health    exit 0 when nginx answers GET /lb-healthz on port 80 (the HEALTHCHECK)
#
# Why the resolver line is written at start: nginx.conf asks nginx to look node addresses up again
# while it runs (a node recreated by the platform comes back with a new address), and nginx needs
# the DNS server's address for that, which depends on the engine: Docker's embedded DNS answers
# on 127.0.0.11, podman's on the network's gateway. Both write it into the container's
# /etc/resolv.conf, so it is read from there rather than written into nginx.conf.
#
# Environment: RESOLVER_CONF (default /etc/nginx/parley-resolver.conf, included by nginx.conf),
# DNS_VALID (how long nginx keeps an answer, default 2s).
set -eu

conf=${RESOLVER_CONF:-/etc/nginx/parley-resolver.conf}

case ${1:-start} in
  start)
    # The first nameserver only: nginx spreads its queries over every resolver it is given, and
    # under podman the second one is the host's, which does not know the node names.
    ns=$(awk '$1 == "nameserver" { print $2; exit }' /etc/resolv.conf)
    if [ -z "$ns" ]; then
      echo "lb.sh: no nameserver in /etc/resolv.conf: nginx could not find the nodes" >&2
      exit 1
    fi
    # IPv6 addresses go in brackets, without a link-local zone (%eth0), which nginx rejects.
    case $ns in
      *:*) ns="[${ns%%\%*}]" ;;
    esac
    # ipv6=off: compose networks are IPv4 unless configured otherwise, and an AAAA answer for a
    # node would only add an address that refuses connections.
    printf 'resolver %s valid=%s ipv6=off;\n' "$ns" "${DNS_VALID:-2s}" >"$conf"
    echo "lb.sh: $(cat "$conf")" >&2
    exec nginx -g 'daemon off;'
    ;;
  health)
    # Whichever HTTP client the image has: curl or busybox wget (alpine), perl (Debian's
    # perl-base is always there).
    url=http://127.0.0.1/lb-healthz
    if command -v curl >/dev/null 2>&1; then
      exec curl -fsS -o /dev/null --max-time 2 "$url"
    elif command -v wget >/dev/null 2>&1; then
      exec wget -q -O /dev/null -T 2 "$url"
    else
      exec perl -MIO::Socket::INET -e '
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:80", Timeout => 2) or exit 1;
        print $s "GET /lb-healthz HTTP/1.0\r\nHost: localhost\r\n\r\n";
        my $line = <$s> // "";
        exit($line =~ m{^HTTP/1\.[01] 200 } ? 0 : 1);'
    fi
    ;;
  *)
    echo "lb.sh: unknown command \"$1\": expected start or health" >&2
    exit 2
    ;;
esac
