#!/bin/sh
# Makes the certificates the TLS tests use, in DIR, with openssl(1): test
# keys are made fresh on every run and never committed.
#   ca.pem            the test CA                  other-ca.pem  another CA
#   server.pem/.key   localhost and 127.0.0.1, by the test CA
#   client.pem/.key   CN=robot-3, by the test CA (mutual TLS)
#   expired.pem/.key  localhost and 127.0.0.1, by the test CA, expired
#   wronghost.pem/.key  only example.invalid, by the test CA
#   self.pem/.key     self-signed, localhost and 127.0.0.1
set -eu
dir=$1
mkdir -p "$dir"
cd "$dir"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ca() {
    key "$1.key"
    openssl req -x509 -new -key "$1.key" -out "$1.pem" -days 30 -subj "/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
}
# leaf NAME SUBJECT SAN DAYS: a certificate signed by the test CA
leaf() {
    key "$1.key"
    openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$1.pem" \
        -days "$4" -extfile "$1.ext" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}
ca ca "sockmsg test CA"
ca other-ca "another CA"
local_names="DNS:localhost,IP:127.0.0.1,IP:::1"
leaf server localhost "$local_names" 30
leaf client robot-3 "DNS:robot-3" 30
leaf expired localhost "$local_names" -1
leaf wronghost example.invalid "DNS:example.invalid" 30
key self.key
openssl req -x509 -new -key self.key -out self.pem -days 30 -subj "/CN=localhost" \
    -addext "subjectAltName=$local_names" 2>/dev/null
