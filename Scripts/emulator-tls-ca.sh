#!/bin/sh
# A throwaway CA and a leaf for localhost / 127.0.0.1 / ::1, made with openssl, for `make emulator-tls`.
# Usage: Scripts/emulator-tls-ca.sh DIR   (writes DIR/ca.pem, DIR/localhost.crt, DIR/localhost.key)
# Kept while valid (30 days), so a CA you trusted once keeps working; delete DIR for new ones.
set -eu
dir=${1:?usage: $0 DIR}
mkdir -p "$dir"
cd "$dir"
if [ -f ca.pem ] && [ -f localhost.crt ] && [ -f localhost.key ] \
    && openssl x509 -checkend 86400 -noout -in localhost.crt >/dev/null 2>&1; then
    made="kept"
else
    rm -f ca.pem ca.key localhost.crt localhost.key localhost.csr ca.srl
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem \
        -days 30 -subj "/CN=webpubsub-emulator throwaway CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout localhost.key \
        -out localhost.csr -subj "/CN=localhost" 2>/dev/null
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" "basicConstraints=CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" > leaf.ext
    openssl x509 -req -in localhost.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 29 -sha256 \
        -extfile leaf.ext -out localhost.crt 2>/dev/null
    rm -f localhost.csr leaf.ext ca.srl
    chmod 644 ca.pem localhost.crt
    made="made"
fi
ca=$(pwd)/ca.pem
cat <<INFO
TLS: $made a throwaway CA in $(pwd) (ca.pem; leaf localhost.crt for localhost, 127.0.0.1, ::1).
Trust it for one tool (nothing system-wide):
  curl --cacert $ca https://localhost:8443/health
  Python (requests, azure-core):  REQUESTS_CA_BUNDLE=$ca   or  connection_verify="$ca" on the client
  Python (ssl, websockets, websocket-client):  SSL_CERT_FILE=$ca
  Node:  NODE_EXTRA_CA_CERTS=$ca        .NET and other OpenSSL users on Linux:  SSL_CERT_FILE=$ca
  swift-webpubsub:  options.tls.additionalCAFile = "$ca"
Or system-wide on Debian/Ubuntu (undo: remove the file and run update-ca-certificates --fresh):
  sudo cp $ca /usr/local/share/ca-certificates/webpubsub-emulator.crt && sudo update-ca-certificates
INFO
