#!/bin/sh
# Throw-away certificates for the TLS tests, made in directory $1 (EC P-256):
#   ca.pem ca.key            a CA
#   server.pem server.key    localhost, DNS:localhost + IP:127.0.0.1, by ca
#   expired.pem expired.key  the same names, by ca, valid only in 2020
#   client.pem client.key    a client certificate, by ca
#   other.pem                another CA, unknown to the tests' clients
#   unknown.pem unknown.key  localhost + 127.0.0.1, by the other CA
#   wronghost.pem wronghost.key  elsewhere.example only, by ca
# Exit 0, or 1 after openssl's message.
set -eu
d=$1
cd "$d"
exec 2>certs.log
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
ca() { # name subject
    key "$1.key"
    openssl req -new -x509 -key "$1.key" -out "$1.pem" -days 30 -subj "$2" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign,cRLSign
}
leaf_ext() {
    printf 'basicConstraints=CA:FALSE\nsubjectAltName=%s\nextendedKeyUsage=%s\n' "$1" "$2" >"$3"
}
sign() { # name issuer subject san usage
    key "$1.key"
    openssl req -new -key "$1.key" -out "$1.csr" -subj "$3"
    leaf_ext "$4" "$5" "$1.ext"
    openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial \
        -out "$1.pem" -days 30 -extfile "$1.ext"
}
ca ca "/CN=usocket test CA"
ca other "/CN=usocket unknown CA"
sign server ca "/CN=localhost/O=usocket tests" "DNS:localhost,IP:127.0.0.1" serverAuth
sign client ca "/CN=usocket client/O=usocket tests" "DNS:client" clientAuth
sign unknown other "/CN=localhost/O=unknown" "DNS:localhost,IP:127.0.0.1" serverAuth
sign wronghost ca "/CN=elsewhere.example/O=usocket tests" "DNS:elsewhere.example" serverAuth
# Expired: openssl ca sets any validity period (x509 -days cannot start in
# the past).
key expired.key
openssl req -new -key expired.key -out expired.csr -subj "/CN=localhost/O=expired"
mkdir -p db
: >db/index.txt
echo 01 >db/serial
cat >ca.cnf <<CNF
[ ca ]
default_ca = test
[ test ]
dir = .
database = db/index.txt
serial = db/serial
new_certs_dir = db
default_md = sha256
policy = any
email_in_dn = no
copy_extensions = none
x509_extensions = leaf
[ any ]
commonName = supplied
organizationName = optional
[ leaf ]
basicConstraints = CA:FALSE
subjectAltName = DNS:localhost,IP:127.0.0.1
extendedKeyUsage = serverAuth
CNF
openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in expired.csr \
    -out expired.pem -startdate 20200101000000Z -enddate 20200201000000Z -notext
cat server.pem server.key >server_combined.pem
