#!/usr/bin/env bash
# make-tls.sh - the TLS material of docker-compose.ha.yml: one CA and one server certificate that every
# replica presents, so that clients reaching any replica through the balancer pin one CA.
#
#   deploy/ha/make-tls.sh [--secrets DIR] [NAME_OR_IP ...]
#
# NAME_OR_IP: the names robots and admins use to reach the balancer (LAN host name, IP). Always included:
# localhost, 127.0.0.1, ::1, balancer, server-a, server-b (the last three: the compose services' names, used by
# the balancer's and the replicas' own health checks). Writes into DIR (default ./secrets, made 0700):
#
#   tls-ca.cert.pem      the CA: what clients pin (enclave-agent enroll --ca, enclavectl, curl --cacert)   0444
#   tls-ca.key.pem       the CA's private key: needed only to issue a server certificate; keep it offline  0400
#   tls-server.cert.pem  the server certificate followed by the CA (the chain the replicas send)            0444
#   tls-server.key.pem   its private key, read by the replicas (uid 1000)                                   0400
#
# An existing CA is reused: run it again with new names and only the server certificate is re-issued, so
# clients keep their pin (restart the replicas one at a time to load it). Needs openssl.
set -euo pipefail

DIR=./secrets
if [ "${1:-}" = --secrets ]; then DIR=${2:?--secrets needs a folder}; shift 2; fi
case "${1:-}" in -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; -*) echo "make-tls.sh: unknown option $1" >&2; exit 2 ;; esac
command -v openssl > /dev/null || { echo "make-tls.sh: openssl is not installed" >&2; exit 1; }

mkdir -p "$DIR" && chmod 0700 "$DIR"
CA_CERT=$DIR/tls-ca.cert.pem CA_KEY=$DIR/tls-ca.key.pem
CERT=$DIR/tls-server.cert.pem KEY=$DIR/tls-server.key.pem
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
umask 077

if [ -s "$CA_CERT" ] && [ -s "$CA_KEY" ]; then
  echo "make-tls.sh: reusing the CA in $CA_CERT ($(openssl x509 -in "$CA_CERT" -noout -subject))"
elif [ -e "$CA_CERT" ] || [ -e "$CA_KEY" ]; then
  echo "make-tls.sh: $CA_CERT and $CA_KEY go together; one of them is missing" >&2; exit 1
else
  openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/ca.key" 2> /dev/null
  openssl req -new -x509 -key "$tmp/ca.key" -sha256 -days 3650 -out "$tmp/ca.pem" \
    -subj "/CN=enclave-server HA TLS CA $(openssl rand -hex 4)" \
    -addext basicConstraints=critical,CA:TRUE,pathlen:0 -addext keyUsage=critical,keyCertSign,cRLSign
  mv "$tmp/ca.key" "$CA_KEY" && mv "$tmp/ca.pem" "$CA_CERT"
  echo "make-tls.sh: created the CA $CA_CERT (clients pin it); keep $CA_KEY offline"
fi

sans=(DNS:localhost IP:127.0.0.1 IP:0:0:0:0:0:0:0:1 DNS:balancer DNS:server-a DNS:server-b)
for n in "$@"; do
  if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then sans+=("IP:$n"); else sans+=("DNS:$n"); fi
done
san=$(IFS=,; echo "${sans[*]}")
openssl ecparam -name prime256v1 -genkey -noout -out "$tmp/server.key" 2> /dev/null
openssl req -new -key "$tmp/server.key" -subj "/CN=${1:-balancer}" -out "$tmp/server.csr"
printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
  "extendedKeyUsage=serverAuth" "subjectAltName=$san" > "$tmp/ext"
openssl x509 -req -in "$tmp/server.csr" -CA "$CA_CERT" -CAkey "$CA_KEY" -CAcreateserial -CAserial "$tmp/serial" \
  -sha256 -days 825 -extfile "$tmp/ext" -out "$tmp/server.pem" 2> /dev/null
cat "$tmp/server.pem" "$CA_CERT" > "$tmp/chain.pem"
rm -f "$KEY" "$CERT"
mv "$tmp/server.key" "$KEY" && mv "$tmp/chain.pem" "$CERT"
chmod 0444 "$CA_CERT" "$CERT"
chmod 0400 "$KEY" "$CA_KEY"
# The replicas run as uid 1000 (the image's `node`) and read the key from a bind-mounted secret.
if [ "$(id -u)" = 0 ]; then chown 1000:1000 "$KEY"; else chmod 0444 "$KEY"; fi
openssl verify -CAfile "$CA_CERT" "$tmp/server.pem" > /dev/null
echo "make-tls.sh: issued $CERT for $san"
