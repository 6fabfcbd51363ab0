#!/usr/bin/env bash
# What one small nftables transaction costs on a node that holds kproxy's
# (kube-proxy's) table for N Services x 10 endpoints: where the time of a
# partial sync goes that is not kproxy's. Needs root; makes and deletes the
# network namespace `kproxy-nft-floor`.
#
#   cargo build --release -p kproxy-bin --example synthetic
#   sudo scripts/nft-floor.sh 10000        # loading 10k takes 2-3 minutes
#
# Prints, per one-line `nft -f` transaction, wall/user/sys time, then the
# same transactions under strace (needs strace): the time of each netlink dump nft makes
# to fill its cache (chains, sets) and of the commit itself (the kernel's
# part, which any tool pays, netlink or not).
set -euo pipefail
N=${1:-2000}
cd "$(dirname "$0")/.."
NS=kproxy-nft-floor
T=kube-proxy
work=$(mktemp -d)
trap 'ip netns del $NS 2>/dev/null || true; rm -rf "$work"' EXIT
target/release/examples/synthetic "$N" 10 nftables >"$work/rules.nft"
ip netns del $NS 2>/dev/null || true
ip netns add $NS
/usr/bin/time -f "load $N x 10: %e s (user %U, sys %S)" ip netns exec $NS nft -f "$work/rules.nft"
svc=$(grep -m1 -oE "add chain ip $T service-[A-Z0-9]{8}-[^ ]*" "$work/rules.nft" | awk '{print $5}')
one() { echo "$1" >"$work/one.nft"; }
timed() {
    one "$2"
    /usr/bin/time -f "$1: %e s (user %U, sys %S)" ip netns exec $NS nft -f "$work/one.nft"
}
# The time nft spends in each netlink request (dumps) and in the commit.
traced() {
    one "$2"
    echo "$1 under strace (request: calls, seconds):"
    ip netns exec $NS strace -f -T -e trace=sendto,sendmsg,recvmsg nft -f "$work/one.nft" 2>&1 |
        grep -o '^[a-z]*\|<[0-9.]*>$\|NFT_MSG_[A-Z]*\|NFNL_MSG_BATCH_BEGIN' | paste -sd' ' |
        sed 's/sendto/\nsendto/g; s/sendmsg/\nsendmsg/g' |
        awk 'NF > 1 { n = 0; s = 0; for (i = 2; i <= NF; i++) if ($i ~ /^</) { gsub(/[<>]/, "", $i); s += $i; n++ }
             name = ($2 ~ /^NF/) ? $2 : "(socket)"; if ($3 ~ /^NFT_MSG/) name = name " " $3
             printf "  %-40s %4d %.4f\n", name, n, s }'
}
for i in 1 2; do
    timed "empty" ""
    timed "add chain" "add chain ip $T floor-$i"
    timed "add rule (no jump)" "add rule ip $T floor-$i counter"
    timed "add rule (jump)" "add rule ip $T floor-$i jump $svc"
    timed "add element (goto)" "add element ip $T service-ips { 172.31.255.$i . tcp . 80 : goto $svc }"
    timed "flush chain" "flush chain ip $T floor-$i"
done
/usr/bin/time -f "nft list chains: %e s (user %U, sys %S)" ip netns exec $NS nft list chains >/dev/null
traced "add rule (no jump)" "add rule ip $T floor-1 counter"
traced "add rule (jump)" "add rule ip $T floor-1 jump $svc"
