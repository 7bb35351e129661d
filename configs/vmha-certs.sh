#!/bin/sh
# Creates the certificates of a vmha cluster with the openssl command-line tool.
#
#   vmha-certs.sh ca DIR              cluster CA: DIR/ca.pem, DIR/ca.key (EC P-256, 20 years)
#   vmha-certs.sh node DIR NODE_NAME  DIR/NODE_NAME.pem and DIR/NODE_NAME.key, signed by the CA
#                                     in DIR; CN and SAN DNS = NODE_NAME; serverAuth+clientAuth
#
# Run `ca` once, on one machine; run `node` for every node; copy ca.pem, NODE.pem and NODE.key
# to that node's /etc/vmha/tls/ (keep ca.key off the nodes). docs/vmha-peer-protocol.md.
set -eu

usage() {
    echo "usage: $0 ca DIR | $0 node DIR NODE_NAME" >&2
    exit 2
}

[ $# -ge 2 ] || usage
command=$1
dir=$2
umask 077
mkdir -p "$dir"

case $command in
ca)
    [ $# -eq 2 ] || usage
    if [ -e "$dir/ca.key" ]; then
        echo "$0: $dir/ca.key exists already; refusing to replace the cluster CA" >&2
        exit 1
    fi
    openssl ecparam -name prime256v1 -genkey -noout -out "$dir/ca.key"
    openssl req -new -x509 -key "$dir/ca.key" -out "$dir/ca.pem" -days 7300 -sha256 \
        -subj "/CN=vmha cluster CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign"
    chmod 644 "$dir/ca.pem"
    echo "$dir/ca.pem"
    ;;
node)
    [ $# -eq 3 ] || usage
    name=$3
    case $name in
    "" | *[!A-Za-z0-9._-]*)
        echo "$0: node name \"$name\" may only hold letters, digits, '.', '_' and '-'" >&2
        exit 1
        ;;
    esac
    if [ ! -f "$dir/ca.key" ] || [ ! -f "$dir/ca.pem" ]; then
        echo "$0: no CA in $dir; run: $0 ca $dir" >&2
        exit 1
    fi
    extensions=$(mktemp)
    trap 'rm -f "$extensions" "$dir/$name.csr"' EXIT
    printf '%s\n' \
        "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyAgreement" \
        "extendedKeyUsage=serverAuth,clientAuth" \
        "subjectAltName=DNS:$name" >"$extensions"
    openssl ecparam -name prime256v1 -genkey -noout -out "$dir/$name.key"
    openssl req -new -key "$dir/$name.key" -out "$dir/$name.csr" -subj "/CN=$name"
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
        -out "$dir/$name.pem" -days 3650 -sha256 -extfile "$extensions" 2>/dev/null
    chmod 644 "$dir/$name.pem"
    echo "$dir/$name.pem"
    ;;
*)
    usage
    ;;
esac
