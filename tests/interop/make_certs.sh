#!/usr/bin/env bash
# Writes a throw-away CA and a server and a client certificate it signed, for the
# interop TLS round of run.sh: ca.pem, server.pem/server.key (localhost, 127.0.0.1),
# client.pem/client.key. Needs only the openssl command.
# usage: tests/interop/make_certs.sh DIR
set -euo pipefail
cd "$1"
ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ec ca.key
openssl req -x509 -new -key ca.key -sha256 -days 1 -subj "/CN=ferroserve interop CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca.pem 2>/dev/null
for who in server client; do
  ec "$who.key"
  openssl req -new -key "$who.key" -subj "/CN=ferroserve interop $who" -out "$who.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=%sAuth\nbasicConstraints=CA:FALSE\n' \
    "$who" >"$who.ext"
  openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 -days 1 \
    -extfile "$who.ext" -out "$who.pem" 2>/dev/null
  rm "$who.csr" "$who.ext"
done
rm -f ca.key ca.srl
