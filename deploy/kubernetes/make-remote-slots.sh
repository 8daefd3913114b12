#!/usr/bin/env bash
# Provisions remote GPU shares for nodes without a GPU (docs/kubernetes.md
# "Remote shares"): COUNT slots on the GPU host at ENDPOINT, each a principal
# with MEMORY_MIB of device memory and a fresh token.
#
#   deploy/kubernetes/make-remote-slots.sh NAME tcp:HOST:7070 COUNT MEMORY_MIB OUTDIR
#
# writes OUTDIR/principals/<NAME>-<i>.conf (for the GPU host's --guests-dir)
# and OUTDIR/slots/<NAME>-<i>.conf (for the CPU nodes' --remote-slots). Run
# it once per GPU host, into the same OUTDIR, then:
#
#   kubectl -n vgpu-system create secret generic vgpu-remote-principals --from-file=OUTDIR/principals
#   kubectl -n vgpu-system create secret generic vgpu-remote-slots --from-file=OUTDIR/slots
set -euo pipefail
[ $# -eq 5 ] || { sed -n 2,14p "$0" >&2; exit 2; }
name=$1 endpoint=$2 count=$3 mib=$4 out=$5
case $endpoint in tcp:*) ;; *) echo "ENDPOINT: tcp:HOST:PORT" >&2; exit 2 ;; esac
mkdir -p "$out/principals" "$out/slots"
umask 077
for i in $(seq 0 $((count - 1))); do
  token=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
  printf 'token = %s\nmemory_mib = %s\nconnections = 8\n' "$token" "$mib" \
    >"$out/principals/$name-$i.conf"
  printf 'endpoint = %s\ntoken = %s\n' "$endpoint" "$token" >"$out/slots/$name-$i.conf"
done
echo "wrote $count slots of $mib MiB on $endpoint to $out"
